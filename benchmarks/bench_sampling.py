"""Sampling throughput of the reference model: N mazes batched, Euler steps, 2 CPU cores.

    python benchmarks/bench_sampling.py --model maze --n 100 --size 5 --steps 20

Target (issue 3): 100 mazes batched in <= 10 s on 2 CPU cores. Prints JSON, with the model's FLOPs per
sample and step (torch's FlopCounterMode) and the FLOP rate achieved, which say how far the target is
from what the hardware can do for this model.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from steplens.allocator import allocator_state, keep_freed_memory
from steplens.evaluate import eval_seeds
from steplens.models.registry import load
from steplens.runner import SamplingConfig, prepare
from steplens.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="maze")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--allocator", choices=["kept", "default"], default="kept",
                    help="kept: steplens.allocator.keep_freed_memory (what the CLI does); default: glibc as it comes")
    a = ap.parse_args()
    if a.allocator == "kept":
        keep_freed_memory()
    den = load(a.model)
    cfg = SamplingConfig(steps=a.steps)
    seeds = list(range(30_000, 30_000 + a.n))
    eval_seeds(den, "maze", a.size, seeds[:2], cfg)  # warm-up
    times, solved = [], 0
    for _ in range(a.reps):
        t = time.perf_counter()
        res = eval_seeds(den, "maze", a.size, seeds, cfg)
        times.append(time.perf_counter() - t)
        solved = sum(r["success"] for r in res)
    task = get_task("maze")
    batch = prepare(den, task, [task.generate(s, a.size, n_frames=getattr(den, "n_frames", 4), cell_px=1) for s in seeds[:2]])
    x = torch.randn(2, *batch.latent_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        den(x, torch.full((2,), 0.5), batch.cond)
    gflop = fc.get_total_flops() / 2 / 1e9  # one sample, one network evaluation
    med = statistics.median(times)
    print(json.dumps({"allocator": allocator_state(), "model": a.model, "n": a.n, "size": a.size, "steps": a.steps, "threads": torch.get_num_threads(),
                      "median_s": round(statistics.median(times), 2), "all_s": [round(t, 2) for t in times],
                      "mazes_per_s": round(a.n / statistics.median(times), 1), "solved": solved, "target_s": 10.0,
                      "gflop_per_sample_step": round(gflop, 3), "achieved_gflops": round(gflop * a.n * a.steps / med, 1),
                      "gflops_needed_for_target": round(gflop * a.n * a.steps / 10.0, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
