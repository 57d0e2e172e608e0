"""Overhead of tracing on the reference model, as ratios measured in one run (issue 4 targets).

    python benchmarks/bench_trace.py --model maze --size 5 --n 8 --steps 20 --reps 5

Compares, interleaved: plain sampling; x0_hat tracing at every step; reduced captures (norm +
proj16) on every block's resid_post; and on all four sites of every block. Targets: tracing <= 1.03x,
captures <= 1.15x. Prints JSON, including the bytes stored vs the declared budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from steplens.models.registry import load
from steplens.probes.common import ProbeConfig, batches
from steplens.runner import SamplingConfig, generate
from steplens.trace import CapturePlan, EventRecorder, Recorder, estimate_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="maze")
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--budget-mb", type=float, default=256.0)
    a = ap.parse_args()
    den = load(a.model)
    cfg = ProbeConfig(model=a.model, size=a.size, n=a.n, batch=a.n, sampling=SamplingConfig(steps=a.steps))
    (batch, seeds), = batches(den, cfg)
    plans = {"captures_resid_post": CapturePlan.parse("blocks.*.resid_post:norm,proj16", a.budget_mb),
             "captures_all_sites": CapturePlan.parse("blocks.*.*:norm,proj16", a.budget_mb)}
    stored: dict[str, int] = {}

    def plain() -> None:
        generate(den, batch, seeds, cfg.sampling)

    def traced() -> None:
        generate(den, batch, seeds, cfg.sampling, callback=EventRecorder(("x0_hat",)))

    def captured(name: str):
        def go() -> None:
            with Recorder(den, plans[name]) as rec:
                generate(den, batch, seeds, cfg.sampling, callback=EventRecorder(("x0_hat",)))
            stored[name] = rec.nbytes()
        return go

    runs = {"plain": plain, "x0_tracing": traced, **{k: captured(k) for k in plans}}
    times: dict[str, list[float]] = {k: [] for k in runs}
    plain()
    for _ in range(a.reps):
        for k, fn in runs.items():  # interleaved, so load changes hit every variant alike
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"model": a.model, "size": a.size, "n": a.n, "steps": a.steps, "reps": a.reps,
                      "median_s": {k: round(v, 3) for k, v in med.items()},
                      "ratio_vs_plain": {k: round(v / med["plain"], 3) for k, v in med.items()},
                      "targets": {"x0_tracing": 1.03, "captures": 1.15},
                      "stored_mb": {k: round(v / 2**20, 2) for k, v in stored.items()},
                      "estimate_mb": {k: round(estimate_bytes(p, den, batch.latent_shape, a.n, a.steps) / 2**20, 2) for k, p in plans.items()},
                      "budget_mb": a.budget_mb}, indent=1))


if __name__ == "__main__":
    main()
