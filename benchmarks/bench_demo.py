"""Wall time and peak memory of `steplens demo` (every stage) on the shipped reference model, 2 CPU cores.

    python benchmarks/bench_demo.py --out runs/bench_demo [--quick] [--reference]

Target (issue 19): the full demo in <= 180 s and <= 2 GB peak resident memory on 2 CPU cores;
`--quick` in <= 60 s. Prints JSON: total and per-stage seconds, peak resident memory, the findings'
verdicts, and whether the targets hold.

`--reference` also times a fixed sampling workload (16 5x5 mazes, 20 Euler steps, one batch) before
and after the demo. On a shared machine the wall time says little by itself; the ratio demo /
reference does not depend much on the load, and `idle_estimate_s` scales it by the reference's
idle time, taken from bench_sampling's idle measurement (100 mazes in 53.7 s, README) as
16 x 0.537 s. That estimate assumes the per-maze cost does not depend on the batch size (on 2 cores
one maze already fills both).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time

import torch

from steplens.allocator import allocator_state, keep_freed_memory
from steplens.demo import DemoConfig, run_demo
from steplens.precision import detect

REFERENCE_IDLE_S = 16 * 53.7 / 100  # bench_sampling on an idle machine (README), per maze, times 16


def reference_s() -> float:
    """Seconds for the fixed reference workload: 16 held-out 5x5 mazes in one batch, 20 Euler steps."""
    from steplens.evaluate import eval_seeds
    from steplens.models.registry import load
    from steplens.runner import SamplingConfig

    den = load("maze")
    seeds = list(range(30_000, 30_016))
    t = time.perf_counter()
    eval_seeds(den, "maze", 5, seeds, SamplingConfig(steps=20))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_demo")
    ap.add_argument("--model", default="maze")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--jobs", type=int, default=None, help="Demo processes (default: run_demo's: 2 on a 2+ core CPU).")
    ap.add_argument("--reference", action="store_true", help="Also time a fixed workload before and after (load-normalised estimate).")
    a = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    shutil.rmtree(a.out, ignore_errors=True)  # a fresh run: no stage may be resumed from disk
    ref = [reference_s()] if a.reference else []
    t = time.perf_counter()
    summary = run_demo(a.out, DemoConfig.make(model=a.model, quick=a.quick), progress=False, jobs=a.jobs)
    wall = time.perf_counter() - t
    if a.reference:
        ref.append(reference_s())
    target = 60.0 if a.quick else 180.0
    # with jobs=2 the second process runs beside this one: the sum of both peaks bounds the demo's peak
    peak_mb = round(sum(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024)
    res = {"allocator": allocator_state(), "capability": detect().to_dict(), "model": a.model, "quick": a.quick,
           "jobs": summary["jobs"], "threads": torch.get_num_threads(),
           "config": summary["config"], "wall_s": round(wall, 1), "stages_s": summary["timings_s"], "peak_rss_mb": peak_mb,
           "verdicts": {f["id"]: f["verdict"] for f in summary["findings"]},
           "target_s": target, "target_rss_mb": 2048, "within_target": wall <= target and peak_mb <= 2048}
    if ref:
        ratio = wall / (sum(ref) / len(ref))
        res |= {"reference_s": [round(r, 1) for r in ref], "demo_over_reference": round(ratio, 2),
                "idle_estimate_s": round(ratio * REFERENCE_IDLE_S, 1), "within_target_idle_estimate": ratio * REFERENCE_IDLE_S <= target}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
