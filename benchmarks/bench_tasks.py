"""Task throughput: generate, render and score ground truths in memory, then write and score a VBVR folder.

Run: python benchmarks/bench_tasks.py [--task maze] [--n 1000] [--size 5] [--n-folder 100]
Prints one JSON object with wall times and throughput. Target: 1,000 maze instances generated and
scored in under 30 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from steplens.scoring import score_folder
from steplens.tasks import get_task
from steplens.tasks.vbvr import generate_set


def bench_memory(task_name: str, n: int, size: int | None, seed: int = 0) -> dict[str, float]:
    """Generate, render and score `n` ground truths without touching the disk."""
    task = get_task(task_name)
    t0 = time.perf_counter()
    insts = [task.generate(seed + i, size) for i in range(n)]
    t1 = time.perf_counter()
    videos = [task.render(inst) for inst in insts]
    t2 = time.perf_counter()
    scores = [task.score(inst, v) for inst, v in zip(insts, videos, strict=True)]
    t3 = time.perf_counter()
    if not all(s.success for s in scores):  # a benchmark that scores wrong numbers is worse than a slow one
        raise SystemExit(f"{sum(not s.success for s in scores)} ground truths failed their own scorer")
    return {
        "n": n,
        "generate_s": t1 - t0,
        "render_s": t2 - t1,
        "score_s": t3 - t2,
        "total_s": t3 - t0,
        "per_s": n / (t3 - t0),
        "success": sum(s.success for s in scores) / n,
    }


def bench_folder(task_name: str, n: int, size: int | None, seed: int = 0) -> dict[str, float]:
    """Write a VBVR folder of `n` samples (PNG + mp4 + meta), then read and score it back."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        generate_set(task_name, n, seed, d, size=size, progress=False)
        t1 = time.perf_counter()
        summary = score_folder(d)
        t2 = time.perf_counter()
    return {
        "n": n,
        "write_s": t1 - t0,
        "score_s": t2 - t1,
        "write_per_s": n / (t1 - t0),
        "score_per_s": n / (t2 - t1),
        "success": summary.overall.success,
        "n_errors": summary.n_errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="maze")
    ap.add_argument("--n", type=int, default=1000, help="instances for the in-memory benchmark")
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--n-folder", type=int, default=100, help="samples for the folder benchmark")
    args = ap.parse_args()
    memory = bench_memory(args.task, args.n, args.size)
    folder = bench_folder(args.task, args.n_folder, args.size)
    result = {"task": args.task, "size": args.size, "memory": memory, "folder": folder, "target_met": memory["total_s"] < 30.0}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
