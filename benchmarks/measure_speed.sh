#!/usr/bin/env bash
# Every speed line of the README's "Speed (2 CPU cores)" section, the demo's wall time and the model card's training
# step timing, re-measured in one sequential run (about 40 minutes on 2 idle cores; the search command adds up to 15).
# Run it on an otherwise idle machine: the header prints the date, the CPU's flags and the load before and after.
#   bash benchmarks/measure_speed.sh [OUT] [--no-search]
# The README lines it covers, in order (each JSON lands in OUT/):
#   1,000 maze instances generated, rendered and scored ....... bench_tasks.json
#   100 5x5 mazes sampled in one batch, 20 Euler steps ......... bench_sampling.json (fp32 fast vs reference path, per-batch
#                                                                 table, roofline, FLOPs; bf16 beside them)
#   freed memory kept in the process (allocator) ............... bench_allocator.json
#   tracing x0_hat at every step / reduced captures ............ bench_trace.json
#   K-seed ensemble vs K sequential runs ....................... bench_ensemble.json
#   steplens demo (6x6, every stage) and "under 3 minutes" ..... bench_demo.json
#   each probe at its default size ............................. bench_probes.json
#   evaluate on a local Ray cluster ............................ bench_ray.json
#   model card: a training step, fp32 vs bf16 autocast .......... bench_train.json
#   the README's search command (7x7, n=60, K=12, budget 4) .... search7.txt (wall time; skipped with --no-search)
set -euo pipefail
out="${1:-runs/measure_speed}"; mkdir -p "$out"
search=1; [[ "${2:-}" == "--no-search" ]] && search=0
log() { echo "[$(date -u +%FT%TZ)] $*"; }
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f|avx512_bf16|avx512_fp16|amx_tile|amx_bf16|amx_int8' | tr '\n' ' ' || true)
{
  echo "date: $(date -u +%F\ %T) UTC"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores; flags: $flags"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  python -c "import torch, steplens; print('torch', torch.__version__, 'threads', torch.get_num_threads(), 'steplens', steplens.__file__)"
} | tee "$out/header.txt"

log "sampling (fp32 fast vs reference, bf16), per-batch step table"
python benchmarks/bench_sampling.py --model maze --n 100 --batch 100 --size 5 --steps 20 --reps 3 | tee "$out/bench_sampling.json"
log "tasks"
python benchmarks/bench_tasks.py --n 1000 --size 5 | tee "$out/bench_tasks.json"
log "allocator"
python benchmarks/bench_allocator.py --n 32 --pairs 3 --reps 2 | tee "$out/bench_allocator.json"
log "tracing overhead"
python benchmarks/bench_trace.py --model maze --size 5 --n 8 --steps 20 --reps 15 | tee "$out/bench_trace.json"
log "ensemble batching"
python benchmarks/bench_ensemble.py --model maze --threads 2 --size 5 | tee "$out/bench_ensemble.json"
log "demo"
python benchmarks/bench_demo.py --out "$out/demo" | tee "$out/bench_demo.json"
log "probes at default sizes"
python benchmarks/bench_probes.py --out "$out/probes_default" | tee "$out/bench_probes.json"
log "ray"
python benchmarks/bench_ray.py --model maze --n 64 --size 4 --steps 20 --batch 8 | tee "$out/bench_ray.json" || log "ray: not measured (bench_ray failed; is ray installed?)"
log "training step (model card)"
python benchmarks/bench_train.py --steps 10 --batch 32 --size 5 | tee "$out/bench_train.json"
if (( search )); then
  log "the README's search command"
  start=$(date +%s)
  steplens search run --model maze --size 7 --n 60 --seed 30000 --k 12 --budget 4 --steps 20 --out "$out/search7" | tail -20 | tee "$out/search7.txt"
  echo "search run wall: $(( $(date +%s) - start )) s" | tee -a "$out/search7.txt"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/header.txt"
log "done: $out"
