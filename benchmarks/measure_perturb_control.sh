#!/usr/bin/env bash
# Noise at a step / frame and the CKA map on the shipped maze model, the paper's wording (replace) next to the
# level-matched control (renoise), at sizes that run in minutes on a shared 2-core machine (issue 17):
#   bash benchmarks/measure_perturb_control.sh [OUT] [N]
# The same probes at larger n run in measure_all.sh.
set -euo pipefail
out="${1:-runs/perturb_control}"; n="${2:-8}"; mkdir -p "$out"
log() { echo "[$(date +%T)] $*"; }
for mode in replace renoise; do
  log "perturb --mode $mode"
  steplens probe perturb --model maze --size 6 --n "$n" --batch "$n" --every 3 --mode "$mode" --frame-window 5:10 \
    --out "$out/perturb_$mode" | tail -12
done
log "cka, both modes"
steplens probe cka --model maze --size 6 --n "$((n < 6 ? n : 6))" --batch 8 --every 3 --mode replace,renoise --out "$out/cka" | tail -10
log "done"
