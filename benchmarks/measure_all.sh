#!/usr/bin/env bash
# Every number in the README, MODEL_CARD and closing notes, in one sequential run on 2 CPU cores
# (about 90 minutes). Run on an otherwise idle machine: the timings are part of the output.
#   bash benchmarks/measure_all.sh [OUT]
# Timings come first; the rest only counts solved samples.
set -euo pipefail
out="${1:-runs/measure}"; mkdir -p "$out"
log() { echo "[$(date +%T)] $*"; }

log "speed (first, while nothing else runs): sampling 100 mazes, demo, probes at default sizes, tracing overhead, ensemble batching"
python benchmarks/bench_sampling.py --model maze --n 500 --batch 100 --size 5 --steps 20 --reps 3 | tee "$out/bench_sampling.json"
python benchmarks/bench_train.py --steps 10 --batch 32 --size 5 | tee "$out/bench_train.json"
python benchmarks/bench_demo.py --out "$out/demo" | tee "$out/bench_demo.json"
python benchmarks/bench_probes.py --out "$out/probes_default" | tee "$out/bench_probes.json"
python benchmarks/bench_trace.py --model maze --size 5 --n 8 --steps 20 --reps 15 | tee "$out/bench_trace.json"
python benchmarks/bench_ensemble.py --model maze --threads 2 --size 5 | tee "$out/bench_ensemble.json"
python benchmarks/bench_tasks.py --n 1000 --size 5 | tee "$out/bench_tasks.json"
python benchmarks/bench_ray.py --model maze --n 64 --size 4 --steps 20 --batch 8 | tee "$out/bench_ray.json"
python benchmarks/bench_allocator.py --n 32 --pairs 3 --reps 2 | tee "$out/bench_allocator.json"

log "model card: solve rate per size (single seed, 20 Euler steps, held-out seeds 10000..)"
for spec in 3:100 4:500 5:500 6:100 7:100 8:100; do
  size=${spec%%:*}; n=${spec##*:}
  steplens evaluate --model maze --size "$size" --n "$n" --seed 10000 --steps 20 --batch 100 --out "$out/card/size$size" | tail -1
done
# probes and ensembles run where there is room: the smallest size >= 5 with a single-seed solve rate in [0.4, 0.9]
size=$(python - "$out" <<'PY'
import json, sys, pathlib
rates = {int(p.parent.name[4:]): json.loads(p.read_text())["solve_rate"] for p in pathlib.Path(sys.argv[1], "card").glob("size*/summary.json")}
mid = [s for s in sorted(rates) if s >= 5 and 0.4 <= rates[s] <= 0.9]
print(mid[0] if mid else min(rates, key=lambda s: abs(rates[s] - 0.65)))
PY
)
log "probe/ensemble size: $size"

log "probes at size $size with more instances"
steplens probe cos --size "$size" --n 100 --batch 50 --out "$out/probe_cos" | tail -8
# the paper's wording (replace) with the level-matched control (renoise) beside it; frames also released after steps 5-9
steplens probe perturb --size "$size" --n 48 --batch 48 --every 2 --mode replace,renoise --frame-window 5:10 --out "$out/probe_perturb" | tail -16
steplens probe cka --size "$size" --n 16 --every 2 --mode replace,renoise --out "$out/probe_cka" | tail -8
steplens probe cka --size "$size" --n 16 --every 2 --mode add --strength 1 --out "$out/probe_cka_add" | tail -5
steplens probe layers --size "$size" --n 16 --out "$out/probe_layers" | tail -6
steplens probe layers --size "$size" --n 16 --window 0:5 --no-token-maps --out "$out/probe_layers_w0_5" | tail -6
steplens probe layers --size "$size" --n 16 --window 10:20 --no-token-maps --out "$out/probe_layers_w10_20" | tail -6
log "activation patching: the residual stream at every step (the paper's protocol), and only what each block writes"
steplens probe layers --size "$size" --n 16 --patch resid --patch-window 0:20 --no-skip --no-token-maps --out "$out/probe_layers_resid_all" | tail -3
steplens probe layers --size "$size" --n 16 --patch writes --no-skip --no-token-maps --out "$out/probe_layers_writes" | tail -3
steplens probe behaviour --size "$size" --n 100 --batch 50 --out "$out/probe_behaviour" | tail -6
log "Chain-of-Steps one size up, where the model struggles more"
steplens probe cos --size "$((size + 1))" --n 100 --batch 50 --out "$out/probe_cos_harder" | tail -8

log "ensemble: 500 instances, K=3 mean_xt window 0:2 vs single"
steplens ensemble run --size "$size" --k 3 --window 0:2 --rule mean_xt --after single --n 500 --seed 50000 --no-baselines --out "$out/ens_main" | tail -6
log "ensemble vs compute-matched baselines, 200 instances"
steplens ensemble run --size "$size" --k 3 --window 0:2 --rule mean_xt --after single --n 200 --seed 60000 --out "$out/ens_baselines" | tail -10
log "mean_x0_renoise (keeps K distinct trajectories) vs single_cold and a same-NFE single seed, 200 instances"
steplens ensemble run --size "$size" --k 3 --window 0:2 --rule mean_x0_renoise --after single --n 200 --seed 60000 --out "$out/ens_renoise" | tail -12
log "sweep over K (window 0:2, mean_xt), 100 instances"
steplens ensemble sweep --size "$size" --n 100 --seed 70000 --ks 2,3,4,8 --windows 0:2 --rules mean_xt --out "$out/ens_sweep_k" | tail -12
log "sweep over windows and rules (K=3), 100 instances"
steplens ensemble sweep --size "$size" --n 100 --seed 70000 --ks 3 --windows 0:1,0:2,0:4 --rules mean_xt,mean_v,mean_x0_renoise --out "$out/ens_sweep_rules" | tail -12
log "test-time search on the steps: 7x7 mazes at a budget of 4 single runs, 12 seeds per instance"
steplens search run --model maze --size 7 --n 60 --seed 30000 --k 12 --budget 4 --steps 20 --out "$out/search7" | tail -40
log "search sweep on 8x8 mazes: solve rate vs NFE up to 8 single runs"
steplens search sweep --model maze --size 8 --n 60 --seed 30000 --k 24 --budgets 1,2,4,8 --ks 4,8,12,24 --ss 2,4,6 --out "$out/search8" | tail -20
python benchmarks/results.py "$out" > "$out/results.md"
log "done: $out/results.md"
