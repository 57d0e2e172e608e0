"""Wall time of `steplens demo` (every stage) on the shipped reference model, 2 CPU cores.

    python benchmarks/bench_demo.py --out runs/bench_demo [--quick]

Target (issue 7): the full demo in <= 180 s on 2 CPU cores; `--quick` is the sub-minute test version.
Prints JSON: total and per-stage seconds, peak resident memory, and whether the target holds.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_demo")
    ap.add_argument("--model", default="maze")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    shutil.rmtree(a.out, ignore_errors=True)  # a fresh run: no stage may be resumed from disk
    t = time.perf_counter()
    summary = run_demo(a.out, DemoConfig.make(model=a.model, quick=a.quick), progress=False)
    wall = time.perf_counter() - t
    target = 60.0 if a.quick else 180.0
    print(json.dumps({"allocator": allocator_state(), "model": a.model, "quick": a.quick, "threads": torch.get_num_threads(), "wall_s": round(wall, 1),
                      "stages_s": summary["timings_s"], "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "target_s": target, "within_target": wall <= target}, indent=1))


if __name__ == "__main__":
    main()
