"""K seeds batched (one ensemble run) vs K sequential single-seed runs, on the reference model.

Run: python benchmarks/bench_ensemble.py [--model maze|PATH] [--ks 3,4] [--size 5] [--steps 20] [--reps 3]
Prints one JSON object: per K the median wall time of K sequential plain runs and of the ensemble
(mean_xt merged over steps 0:2, all K continued) two ways: `batched`, all K trajectories in one batch
at every step (what batching alone buys), and `ensemble`, as `ensemble_latents` runs it by default
(mean_xt makes the K identical after the first merge, so one per instance is computed from there).
Ratios are over sequential. Target: <= 0.6 on CPU. Repetitions are interleaved (order alternating) so drifting
machine load hits both sides alike. Without a trained model it uses the base preset with its initial
(random) weights: the cost of a forward pass does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from steplens.allocator import allocator_state, keep_freed_memory
from steplens.ensemble import EnsembleConfig, ensemble_latents
from steplens.models.dit import PRESETS, ReferenceDenoiser, VideoDiT
from steplens.models.registry import load
from steplens.models.serialize import shipped_models
from steplens.runner import SamplingConfig, generate, noise_seed, prepare
from steplens.sampling import seeded_noise
from steplens.tasks import get_task


def make_denoiser(spec: str | None, preset: str = "base") -> tuple[ReferenceDenoiser, str]:
    if spec:
        return load(spec), spec
    if "maze" in shipped_models():
        return load("maze"), "maze"
    torch.manual_seed(0)
    return ReferenceDenoiser(VideoDiT(PRESETS[preset]()).eval(), name=f"{preset}-random"), f"{preset} preset, random weights"


def bench(den: ReferenceDenoiser, k: int, size: int, steps: int, reps: int, instances: int, seed: int = 50_000) -> dict[str, float]:
    task = get_task("maze")
    seeds = list(range(seed, seed + instances))
    insts = [task.generate(s, size, n_frames=getattr(den, "n_frames", 4), cell_px=1) for s in seeds]
    batch = prepare(den, task, insts)
    cfg = SamplingConfig(steps=steps)
    sigmas = cfg.sigmas()
    ens = EnsembleConfig(k=k, window=(0, 2), rule="mean_xt")
    x = seeded_noise(batch.latent_shape, [noise_seed(s, j) for s in seeds for j in range(k)])
    cond = batch.cond.repeat(k)

    def batched() -> None:
        ensemble_latents(den, x, sigmas, cond, ens, dedupe=False)

    def ensemble() -> None:
        ensemble_latents(den, x, sigmas, cond, ens)

    def sequential() -> None:
        for j in range(k):
            generate(den, batch, [noise_seed(s, j) for s in seeds], cfg)

    batched(), ensemble(), sequential()  # warm-up
    order = [("batched", batched), ("ensemble", ensemble), ("sequential", sequential)]
    times: dict[str, list[float]] = {name: [] for name, _ in order}
    for r in range(reps):
        for name, fn in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {"k": k, **{f"{name}_s": round(v, 4) for name, v in med.items()},
            "ratio_batched": round(med["batched"] / med["sequential"], 3), "ratio_ensemble": round(med["ensemble"] / med["sequential"], 3),
            **{f"{name}_all_s": [round(t, 4) for t in v] for name, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="Shipped name or exported path (default: shipped 'maze', else base preset random)")
    ap.add_argument("--preset", default="base", choices=sorted(PRESETS), help="Preset for the random-weights fallback")
    ap.add_argument("--ks", default="3,4")
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--instances", type=int, default=1, help="Instances per run (each with K seeds)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default, all cores)")
    a = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    if a.reps < 3:
        ap.error("--reps must be >= 3 (the median of fewer is not a median)")
    if a.threads:
        torch.set_num_threads(a.threads)
    den, what = make_denoiser(a.model, a.preset)
    rows = [bench(den, int(k), a.size, a.steps, a.reps, a.instances) for k in a.ks.split(",")]
    print(json.dumps({"allocator": allocator_state(), "model": what, "size": a.size, "steps": a.steps, "instances": a.instances, "threads": torch.get_num_threads(),
                      "reps": a.reps, "target_ratio": 0.6, "results": rows,
                      "max_ratio_batched": max(r["ratio_batched"] for r in rows),
                      "max_ratio_ensemble": max(r["ratio_ensemble"] for r in rows)}, indent=1))


if __name__ == "__main__":
    main()
