#!/usr/bin/env bash
# Every number in the README, MODEL_CARD and closing notes, in one sequential run (2 CPU cores).
#   bash benchmarks/measure_all.sh [OUT]   (about 30-40 minutes)
set -euo pipefail
out="${1:-runs/measure}"; mkdir -p "$out"
log() { echo "[$(date +%T)] $*"; }
log "model card: solve rate per size"
for spec in 4:500 5:500 3:100 6:100 7:100 8:100; do
  size=${spec%%:*}; n=${spec##*:}
  steplens evaluate --model maze --size "$size" --n "$n" --seed 10000 --steps 20 --batch 100 --out "$out/card/size$size" | tail -1
done
size=$(python - "$out" <<'PY'
import json, sys, pathlib
rates = {int(p.parent.name[4:]): json.loads(p.read_text())["solve_rate"] for p in pathlib.Path(sys.argv[1], "card").glob("size*/summary.json")}
mid = [s for s in sorted(rates) if s >= 5 and 0.4 <= rates[s] <= 0.9]
print(mid[0] if mid else min(rates, key=lambda s: abs(rates[s] - 0.65)))
PY
)
log "ensemble/probe size: $size"
log "sampling benchmark"; python benchmarks/bench_sampling.py --model maze --n 100 --size 5 --steps 20 --reps 2 | tee "$out/bench_sampling.json"
log "demo"; /usr/bin/time -v steplens demo --out "$out/demo" 2> "$out/demo_time.txt" | tail -2
log "probes"
steplens probe cos --size "$size" --n 48 --batch 48 --out "$out/probe_cos" | tail -8
steplens probe perturb --size "$size" --n 32 --batch 32 --every 2 --out "$out/probe_perturb" | tail -6
steplens probe cka --size "$size" --n 16 --batch 16 --every 4 --out "$out/probe_cka" | tail -4
steplens probe layers --size "$size" --n 16 --batch 16 --out "$out/probe_layers" | tail -6
log "ensemble: 500 instances, ensemble vs single and single with matched compute"
steplens ensemble run --size "$size" --k 3 --window 0:2 --rule mean_xt --after single --n 500 --seed 50000 --no-baselines --out "$out/ens_main" | tail -6
log "ensemble baselines on 200 instances"
steplens ensemble run --size "$size" --k 3 --window 0:2 --rule mean_xt --after single --n 200 --seed 60000 --out "$out/ens_baselines" | tail -10
log "ensemble sweep on 100 instances"
steplens ensemble sweep --size "$size" --n 100 --seed 70000 --ks 2,4 --windows 0:2,0:4 --rules mean_xt,mean_v,mean_x0_renoise --out "$out/ens_sweep" | tail -12
log "tracing overhead"; python benchmarks/bench_trace.py --model maze --size 5 --n 8 --steps 20 --reps 5 | tee "$out/bench_trace.json"
log "ensemble batching"; python benchmarks/bench_ensemble.py --help >/dev/null && python benchmarks/bench_ensemble.py --model maze | tee "$out/bench_ensemble.json"
log done
