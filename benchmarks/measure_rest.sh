#!/usr/bin/env bash
# The second half of measure_all.sh, trimmed to fit a session: demo, ensemble (n=500), probes, benchmarks.
#   bash benchmarks/measure_rest.sh [OUT] [SIZE]
set -euo pipefail
out="${1:-runs/measure}"; size="${2:-5}"; mkdir -p "$out"
log() { echo "[$(date +%T)] $*"; }
log "demo"; /usr/bin/time -v steplens demo --out "$out/demo" 2> "$out/demo_time.txt" | tail -2
log "ensemble: 500 instances, K=3 mean_xt window 0:2 vs single"
steplens ensemble run --size "$size" --k 3 --window 0:2 --rule mean_xt --after single --n 500 --seed 50000 --no-baselines --out "$out/ens_main" | tail -5
log "probes"
steplens probe cos --size "$size" --n 48 --batch 48 --out "$out/probe_cos" | tail -8
steplens probe perturb --size "$size" --n 24 --batch 24 --every 2 --out "$out/probe_perturb" | tail -6
steplens probe cka --size "$size" --n 8 --batch 8 --every 4 --out "$out/probe_cka" | tail -4
steplens probe layers --size "$size" --n 8 --batch 8 --out "$out/probe_layers" | tail -6
log "sampling"; python benchmarks/bench_sampling.py --model maze --n 100 --size 5 --steps 20 --reps 1 | tee "$out/bench_sampling.json"
log "tracing overhead"; python benchmarks/bench_trace.py --model maze --size 5 --n 8 --steps 20 --reps 3 | tee "$out/bench_trace.json"
log "small sweep"
steplens ensemble sweep --size "$size" --n 50 --seed 70000 --ks 2,4 --windows 0:2 --rules mean_xt,mean_v,mean_x0_renoise --out "$out/ens_sweep" | tail -12
log done
