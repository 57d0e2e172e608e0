"""Sampling speed with freed memory kept in the process (steplens.allocator) vs glibc as it comes.

    python benchmarks/bench_allocator.py --n 32 --pairs 3

Runs benchmarks/bench_sampling.py in fresh processes, alternating `--allocator kept` and
`--allocator default` (the setting is process-wide and cannot be undone inside one process), and
prints JSON with each run's median time, the median of the paired ratios default/kept, and the
peak resident memory of each run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(allocator: str, a: argparse.Namespace) -> tuple[float, float]:
    out = subprocess.run([sys.executable, str(HERE / "bench_sampling.py"), "--model", a.model, "--n", str(a.n), "--size", str(a.size),
                          "--steps", str(a.steps), "--reps", str(a.reps), "--allocator", allocator],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    if res["allocator"] != allocator:
        raise SystemExit(f"bench_sampling ran with allocator {res['allocator']!r}, asked for {allocator!r}")
    return res["median_s"], res["peak_rss_mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="maze")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=3)
    a = ap.parse_args()
    times: dict[str, list[float]] = {"kept": [], "default": []}
    rss: dict[str, list[float]] = {"kept": [], "default": []}
    for i in range(a.pairs):
        for alloc in (["kept", "default"] if i % 2 == 0 else ["default", "kept"]):
            t, m = run(alloc, a)
            times[alloc].append(t)
            rss[alloc].append(m)
    ratios = [d / k for d, k in zip(times["default"], times["kept"])]
    print(json.dumps({"model": a.model, "n": a.n, "size": a.size, "steps": a.steps, "pairs": a.pairs,
                      "median_s": {k: round(statistics.median(v), 2) for k, v in times.items()},
                      "all_s": times, "speedup_kept": round(statistics.median(ratios), 3),
                      "peak_rss_mb": rss}))


if __name__ == "__main__":
    main()
