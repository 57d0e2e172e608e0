"""Overhead of tracing on the reference model, as ratios measured in one run.

    python benchmarks/bench_trace.py                       # base preset, random weights
    python benchmarks/bench_trace.py --weights maze        # a shipped name or an exported model path

5x5 mazes, 4 frames, batch 8, 20 Euler steps by default (`--precision bf16`: the network in bf16). Compares, interleaved in rotating order (so
load changes and first-run effects hit every variant alike), the wall time over --reps repetitions of: plain sampling; x0_hat tracing
at every step; reduced captures (norm + proj16) at every step on every block's resid_post; and on all
four sites of every block. `ratio_vs_plain` is the median over repetitions of each variant's time over
the same repetition's plain time. Targets: x0 tracing <= 1.03x, captures <= 1.15x. Prints JSON, including
the bytes the captures stored (exactly the estimate) against the declared budget.
On a busy machine whole-run medians are noisy; `per_forward_ms` times single model calls with and
without each plan's hooks, alternating call by call, which resolves overheads of a few percent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from steplens.allocator import allocator_state, keep_freed_memory
from steplens.context import model_call
from steplens.models.dit import ReferenceDenoiser, random_tiny
from steplens.precision import choose
from steplens.runner import SamplingConfig, generate, noise_seed, prepare
from steplens.tasks import get_task
from steplens.trace import CapturePlan, Recorder, TraceRecorder, check_budget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", "--model", dest="weights", default=None,
                    help="model name or export path (default: base preset, random weights)")
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--budget-mb", type=float, default=256.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--forward-reps", type=int, default=15, help="alternating single-call repetitions for per_forward_ms")
    ap.add_argument("--precision", default="fp32", help="network precision: fp32, bf16 or auto (steplens.precision)")
    a = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.weights:
        from steplens.models.registry import load

        den = load(a.weights, device=a.device)
    else:
        den = ReferenceDenoiser(random_tiny(preset="base", scale=0.05).eval().to(a.device), name="base-random")
    choice = choose(a.precision, a.device)
    den.to_precision(choice.precision)
    task = get_task("maze")
    insts = [task.generate(10_000 + i, a.size, n_frames=a.frames, cell_px=1) for i in range(a.n)]
    batch = prepare(den, task, insts)
    seeds = [noise_seed(10_000 + i) for i in range(a.n)]
    sampling = SamplingConfig(steps=a.steps)
    plans = {"captures_resid_post": CapturePlan.parse("blocks.*.resid_post:norm,proj16", a.budget_mb),
             "captures_all_sites": CapturePlan.parse("blocks.*.*:norm,proj16", a.budget_mb)}
    estimates = {k: check_budget(p, den, batch.latent_shape, a.n, a.steps) for k, p in plans.items()}  # refuses before timing
    stored: dict[str, int] = {}
    traced: dict[str, int] = {}

    def plain() -> None:
        generate(den, batch, seeds, sampling)

    def x0_tracing() -> None:
        rec = TraceRecorder(("x0_hat",))
        generate(den, batch, seeds, sampling, callback=rec)
        traced["x0_tracing"] = sum(t.numel() * t.element_size() for t in rec.events().values())

    def captured(name: str):
        def go() -> None:
            with Recorder(den, plans[name]) as rec:
                generate(den, batch, seeds, sampling)
            stored[name] = rec.cache.nbytes()
        return go

    runs = {"plain": plain, "x0_tracing": x0_tracing, **{k: captured(k) for k in plans}}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(a.reps):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: no variant always runs first or last
        for k in order:
            fn = runs[k]
            if den.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if den.device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    fwd = per_forward(den, batch, plans, a.forward_reps)
    # each repetition's variant over the same repetition's plain run: machine drift cancels in the pair
    ratio = {k: round(statistics.median(t / p for t, p in zip(v, times["plain"])), 3) for k, v in times.items()}
    print(json.dumps({
        "allocator": allocator_state(),
        "model": a.weights or "base (random weights)", "device": str(den.device), "precision": choice.to_dict(), "threads": torch.get_num_threads(),
        "size": a.size, "frames": a.frames, "n": a.n, "steps": a.steps, "reps": a.reps,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ratio_vs_plain": ratio,
        "ratio_of_medians": {k: round(v / med["plain"], 3) for k, v in med.items()},
        "all_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "per_forward_ms": {k: round(v * 1000, 2) for k, v in fwd.items()},
        "per_forward_ratio": {k: round(v / fwd["plain"], 3) for k, v in fwd.items()},
        "targets": {"x0_tracing": 1.03, "captures": 1.15},
        "within_target": {"x0_tracing": ratio["x0_tracing"] <= 1.03, **{k: ratio[k] <= 1.15 for k in plans}},
        "stored_mb": {k: round(v / 2**20, 3) for k, v in (stored | traced).items()},
        "estimate_mb": {k: round(v / 2**20, 3) for k, v in estimates.items()},
        "estimate_exact": all(stored[k] == estimates[k] for k in plans),
        "budget_mb": a.budget_mb}, indent=1))


def per_forward(den, batch, plans: dict[str, CapturePlan], reps: int) -> dict[str, float]:
    """Median seconds of one model call, plain and under each plan's recorder, alternating call by call."""
    x = torch.randn(len(batch.instances), *batch.latent_shape, generator=torch.Generator().manual_seed(0)).to(den.device)
    sigma = torch.full((x.shape[0],), 0.5, device=den.device)
    times: dict[str, list[float]] = {"plain": [], **{k: [] for k in plans}}
    with torch.no_grad(), model_call(0, 0.5):
        for _ in range(reps + 1):  # the first round warms up
            for k in times:
                rec = Recorder(den, plans[k]) if k in plans else None
                if rec is not None:
                    rec.__enter__()
                t = time.perf_counter()
                den(x, sigma, batch.cond)
                if rec is not None:
                    rec.flush()
                if den.device.type == "cuda":
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t)
                if rec is not None:
                    rec.__exit__(None, None, None)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


if __name__ == "__main__":
    main()
