"""Wall time and peak memory of `steplens demo` (every stage) on the shipped reference model, 2 CPU cores.

    python benchmarks/bench_demo.py --out runs/bench_demo [--quick] [--reference] [--repeat 3] [--before] [--n 8]

Target (issue 19): the full demo in <= 180 s and <= 2 GB peak resident memory on 2 CPU cores;
`--quick` in <= 60 s. Prints JSON: total and per-stage seconds, peak resident memory, the findings'
verdicts, and whether the targets hold.

`--repeat R` runs the demo R times and reports the median wall time and the median of each stage's
seconds. `--before` also runs, in the same process and interleaved with the shared run, the same config
with `share=False` (each stage computes alone: Chain-of-Steps, behaviours and the cards each trace the
instances, CKA samples its own runs), and prints each stage's seconds unshared and shared side by side
(`stages_before_after_s`), so both come from the same machine under the same load. `--n N` sets every
stage's n to N (a reduced size to measure on a shared machine; its verdicts mean nothing below 24).
With two processes the stages of `demo.GROUPS` overlap: the wall time is the longer group's, not the sum.

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
import os
import resource
import shutil
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from steplens.allocator import allocator_state, keep_freed_memory
from steplens.demo import DemoConfig, run_demo
from steplens.precision import detect

REFERENCE_IDLE_S = 16 * 53.7 / 100  # bench_sampling on an idle machine (README), per maze, times 16
BEFORE = dict(share=False)  # every stage computed alone
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


def cpu_flags() -> list[str]:
    """The vector flags of this CPU that decide the matmul speed (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return []
    line = next((l for l in text.splitlines() if l.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in FLAGS if f in have]


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


def _median(xs: list[float]) -> float:
    return round(float(statistics.median(xs)), 1)


def time_demo(out: str, cfg: DemoConfig, jobs: int | None) -> tuple[float, dict[str, Any]]:
    """One fresh demo run: (wall seconds, summary)."""
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: no stage may be resumed from disk
    t = time.perf_counter()
    summary = run_demo(out, cfg, progress=False, jobs=jobs)
    return time.perf_counter() - t, summary


def medians(runs: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """Median wall time and per-stage seconds over runs, with each run's figures beside them."""
    stages = {k for _, s in runs for k in s.get("stage_s", s["timings_s"])}
    return {"wall_s": _median([w for w, _ in runs]), "wall_s_runs": [round(w, 1) for w, _ in runs],
            "stages_s": {k: _median([s.get("stage_s", s["timings_s"])[k] for _, s in runs if k in s.get("stage_s", s["timings_s"])])
                         for k in sorted(stages)},
            "n": {k: v for k, v in runs[-1][1]["config"].items() if k.startswith("n_")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_demo")
    ap.add_argument("--model", default="maze")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--jobs", type=int, default=None, help="Demo processes (default: run_demo's: 2 on a 2+ core CPU).")
    ap.add_argument("--repeat", type=int, default=1, help="Demo runs; wall and stage times are medians over them.")
    ap.add_argument("--before", action="store_true", help="Also time the same config unshared (BEFORE: share=False), interleaved, same process.")
    ap.add_argument("--reference", action="store_true", help="Also time a fixed workload before and after (load-normalised estimate).")
    ap.add_argument("--n", type=int, default=None, help="Every stage's n (a reduced size to measure; verdicts need 24).")
    a = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    sizes = {} if a.n is None else dict(n_cos=a.n, n_perturb=a.n, n_cka=a.n, n_layers=a.n, n_ensemble=a.n, min_n=min(a.n, 24))
    cfg = DemoConfig.make(model=a.model, quick=a.quick, **sizes)
    load0 = os.getloadavg()
    ref = [reference_s()] if a.reference else []
    runs, before = [], []
    for _ in range(a.repeat):
        if a.before:
            before.append(time_demo(a.out + "_before", replace(cfg, **BEFORE), a.jobs))
        runs.append(time_demo(a.out, cfg, a.jobs))
    if a.reference:
        ref.append(reference_s())
    wall = statistics.median([w for w, _ in runs])
    summary = runs[-1][1]
    target = 60.0 if a.quick else 180.0
    # with jobs=2 the second process runs beside this one: the sum of both peaks bounds the demo's peak
    peak_mb = round(sum(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024)
    res = {"allocator": allocator_state(), "capability": detect().to_dict(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
           "load_average_start_end": [round(load0[0], 2), round(os.getloadavg()[0], 2)], "model": a.model, "quick": a.quick,
           "jobs": summary["jobs"], "threads": torch.get_num_threads(), "config": summary["config"], "repeat": a.repeat,
           **medians(runs), "peak_rss_mb": peak_mb,
           "verdicts": {f["id"]: f["verdict"] for f in summary["findings"]},
           "needed_n": {f["id"]: f["needed_n"] for f in summary["findings"] if f.get("needed_n")},
           "target_s": target, "target_rss_mb": 2048, "within_target": wall <= target and peak_mb <= 2048}
    if before:
        res["before"] = medians(before) | {"verdicts": {f["id"]: f["verdict"] for f in before[-1][1]["findings"]}}
        b, s = res["before"]["stages_s"], res["stages_s"]
        res["stages_before_after_s"] = {k: [b.get(k), s.get(k)] for k in sorted(set(b) | set(s))} | {"wall": [res["before"]["wall_s"], res["wall_s"]]}
    if ref:
        ratio = wall / (sum(ref) / len(ref))
        res |= {"reference_s": [round(r, 1) for r in ref], "demo_over_reference": round(ratio, 2),
                "idle_estimate_s": round(ratio * REFERENCE_IDLE_S, 1), "within_target_idle_estimate": ratio * REFERENCE_IDLE_S <= target}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
