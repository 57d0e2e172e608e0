"""Sampling throughput of the reference model in fp32 and bf16, as paired ratios measured in one process.

    python benchmarks/bench_sampling.py --model maze --n 100 --size 5 --steps 20 --reps 3

Targets (issues 3 and 23): 100 held-out 5x5 mazes (seeds from 10000), 20 Euler steps, 2 CPU cores
in <= 10 s; bf16 / fp32 <= 0.35; bf16 solve rate within 1 point of fp32 (paired CI includes 0).

One run prints JSON with:
- the CPU's bf16 capability (steplens.precision.detect) and what `--precision auto` picks on it;
- the time to sample one batch of `--batch` mazes in fp32 and in bf16 (the same model, weights cast
  once), repeated `--reps` times interleaved in alternating order; `ratio_bf16_over_fp32` is the
  median over repetitions of the paired per-repetition ratio;
- the model's FLOPs per sample and step (torch's FlopCounterMode, attention included), the GFLOP/s
  each precision achieves, and the matmul roofline of each dtype (a 2048^3 matmul timed in this
  process, interleaved too), so `of_roofline` says how far the model is from the hardware;
- the solve rates of `--n` held-out instances sampled with the same instance and noise seeds in
  both precisions, and their paired difference (bf16 - fp32) with a bootstrap 95% CI;
- with `--compile`: torch.compile of the bf16 network, its compile time apart, and its paired time.

The fp32 paths (issue 34): `fp32` is the network's fast inference path (VideoDiT.fast, the default),
`fp32_reference` the same weights with `fast = False` (the forward as it was before), paired in the
same repetitions; `paired.fp32_reference.ratio_over_fp32` is the speed-up and `answers_differ` counts
instances whose solved/failed differs. `per_batch` times one network evaluation (one sampling step)
at each of `--batches` for each path (`--compile` adds `fp32_compiled`, torch.compile of the fast
path, its first call apart; inductor's on-disk cache in TORCHINDUCTOR_CACHE_DIR keeps it across
processes), with GFLOP/s and the ratio to the fp32 matmul roofline measured in this process at the
same thread count. FLOPs per sample-step: torch's FlopCounterMode plus the attention products, which
it does not count on the CPU (`aten::_scaled_dot_product_flash_attention_for_cpu` has no formula),
checked against the count from the config (`analytic_flops`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from steplens.allocator import allocator_state, keep_freed_memory
from steplens.evaluate import eval_seeds
from steplens.models.registry import load
from steplens.precision import choose, detect
from steplens.runner import SamplingConfig, prepare
from steplens.stats import bootstrap_diff, wilson
from steplens.tasks import get_task


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    """Best-of-`reps` GFLOP/s of an n^3 matmul in `dtype` (the roofline the model's matmuls can reach)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    """The matmul-relevant flags of /proc/cpuinfo (empty where there is none)."""
    try:
        line = next(x for x in open("/proc/cpuinfo") if x.startswith("flags"))
    except (OSError, StopIteration):
        return {}
    have = set(line.split(":", 1)[1].split())
    return {f: f in have for f in CPU_FLAGS}


def attention_flops(cfg, n_tokens: int) -> float:
    """QK^T and AV of every block for one sample: 2 products x 2 N^2 D FLOPs per block."""
    return cfg.depth * 2 * 2 * n_tokens**2 * cfg.dim


def analytic_flops(cfg, n_tokens: int) -> float:
    """FLOPs of one sample-step from the config: the token linears, attention, depthwise conv, adaLN and embeddings."""
    d, hid, p = cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.in_channels * math.prod(cfg.patch)
    per_token = 2 * d * (3 * d + d) + 2 * 2 * d * hid + 2 * 9 * hid  # qkv, proj, fc1, fc2, 3x3 depthwise
    per_sample = cfg.depth * 2 * d * 6 * d + 2 * d * 2 * d + 2 * (128 * d + d * d)  # adaLN of each block and the final layer, t MLP
    return cfg.depth * (per_token * n_tokens) + attention_flops(cfg, n_tokens) + n_tokens * 2 * (2 * p * d + d * p) + per_sample


def flops_per_sample_step(den, size: int) -> tuple[float, float, float]:
    """(FLOPs of one network evaluation for one sample, of which FlopCounterMode saw, analytic count)."""
    task = get_task("maze")
    batch = prepare(den, task, [task.generate(s, size, n_frames=getattr(den, "n_frames", 4), cell_px=1) for s in (0, 1)])
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        den(torch.randn(2, *batch.latent_shape), torch.full((2,), 0.5), batch.cond)
    counted = fc.get_total_flops() / 2
    n_tokens = math.prod(den.token_grid((2, *batch.latent_shape)))
    return counted + attention_flops(den.model.cfg, n_tokens), counted, analytic_flops(den.model.cfg, n_tokens)


def per_batch(dens: dict, size: int, batches: list[int], flops: float, roofline: float, reps: int) -> dict:
    """One network evaluation per path at each batch size, paired and interleaved; first call apart."""
    task = get_task("maze")
    out: dict[str, dict] = {}
    for bs in batches:
        den0 = next(iter(dens.values()))
        insts = [task.generate(s, size, n_frames=getattr(den0, "n_frames", 4), cell_px=1) for s in range(10_000, 10_000 + bs)]
        batch = prepare(den0, task, insts)
        x = torch.randn((bs, *batch.latent_shape), generator=torch.Generator().manual_seed(bs))
        sig = torch.full((bs,), 0.5)
        first: dict[str, float] = {}
        ts: dict[str, list[float]] = {k: [] for k in dens}
        with torch.no_grad():
            for name, den in dens.items():
                t = time.perf_counter()
                den(x, sig, batch.cond)
                first[name] = round(time.perf_counter() - t, 3)
            order = list(dens)
            for rep in range(max(reps, 3)):
                for name in order if rep % 2 == 0 else order[::-1]:
                    t = time.perf_counter()
                    dens[name](x, sig, batch.cond)
                    ts[name].append(time.perf_counter() - t)
        row = {}
        for name, tt in ts.items():
            med = statistics.median(tt)
            row[name] = {"median_ms": round(med * 1e3, 2), "first_call_s": first[name], "gflops": round(flops * bs / med / 1e9, 1),
                         "of_fp32_roofline": round(flops * bs / med / 1e9 / roofline, 3)}
        if "fp32_reference" in ts:
            row["speedup_over_reference"] = {n: round(statistics.median([r / f for r, f in zip(ts["fp32_reference"], ts[n])]), 3)
                                             for n in ts if n != "fp32_reference"}
        out[str(bs)] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="maze")
    ap.add_argument("--n", type=int, default=100, help="held-out instances for the paired solve rates")
    ap.add_argument("--batch", type=int, default=100, help="mazes per timed batch (and per sampling call)")
    ap.add_argument("--seed", type=int, default=10_000, help="first held-out instance seed")
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3, help="paired timing repetitions")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the bf16 network and of the fp32 fast path")
    ap.add_argument("--no-bf16", action="store_true", help="time the fp32 paths only")
    ap.add_argument("--batches", default="1,8,32,100", help="batch sizes of the per-step table ('' to skip it)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--allocator", choices=["kept", "default"], default="kept",
                    help="kept: steplens.allocator.keep_freed_memory (what the CLI does); default: glibc as it comes")
    a = ap.parse_args()
    if a.allocator == "kept":
        keep_freed_memory()
    if a.threads:
        torch.set_num_threads(a.threads)
    cap = detect()
    dens = {"fp32": load(a.model), "fp32_reference": load(a.model)}
    dens["fp32_reference"].model.fast = False  # the forward as it was before the fast path (issue 34)
    if not a.no_bf16:
        dens["bf16"] = load(a.model).to_precision("bf16")
    if a.compile:
        dens["fp32_compiled"] = copy.copy(dens["fp32"])
        dens["fp32_compiled"].model = torch.compile(dens["fp32"].model, dynamic=False)
    if a.compile and not a.no_bf16:
        dens["bf16_compiled"] = copy.copy(dens["bf16"])
        dens["bf16_compiled"].model = torch.compile(dens["bf16"].model, dynamic=False)
    cfg = SamplingConfig(steps=a.steps)
    seeds = list(range(a.seed, a.seed + a.n))
    timed = seeds[: a.batch]
    warm: dict[str, float] = {}
    for name, den in dens.items():  # warm-up (and, compiled, the compile) on the timed batch shape
        t = time.perf_counter()
        eval_seeds(den, "maze", a.size, timed if name.endswith("_compiled") else timed[:2], SamplingConfig(steps=1))
        warm[name] = round(time.perf_counter() - t, 2)
    times: dict[str, list[float]] = {k: [] for k in dens}
    results: dict[str, dict[int, bool]] = {k: {} for k in dens}
    order = list(dens)
    for rep in range(a.reps):
        for name in order if rep % 2 == 0 else order[::-1]:  # alternate which precision runs first
            t = time.perf_counter()
            res = eval_seeds(dens[name], "maze", a.size, timed, cfg)
            times[name].append(time.perf_counter() - t)
            results[name].update((r["seed"], bool(r.get("success", False))) for r in res)
    for name in dens:  # the rest of the --n instances, untimed, for the paired solve rates
        for i in range(a.batch, a.n, a.batch):
            res = eval_seeds(dens[name], "maze", a.size, seeds[i : i + a.batch], cfg)
            results[name].update((r["seed"], bool(r.get("success", False))) for r in res)
    roof = {"fp32": [], "bf16": []}
    for _ in range(3):
        roof["fp32"].append(matmul_gflops(torch.float32))
        if not a.no_bf16:
            roof["bf16"].append(matmul_gflops(torch.bfloat16))
    flops, counted, analytic = flops_per_sample_step(dens["fp32"], a.size)
    work = flops * len(timed) * a.steps
    per: dict[str, dict] = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        roofline = statistics.median(roof["bf16" if name.startswith("bf16") else "fp32"])
        solved = [results[name][s] for s in seeds]
        k = sum(solved)
        per[name] = {"median_s": round(med, 2), "all_s": [round(t, 2) for t in ts], "mazes_per_s": round(len(timed) / med, 1),
                     "achieved_gflops": round(work / med / 1e9, 1), "matmul_roofline_gflops": round(roofline, 1),
                     "of_roofline": round(work / med / 1e9 / roofline, 3), "warmup_s": warm[name],
                     "solved": k, "solve_rate": k / len(seeds), "solve_rate_ci95": list(wilson(k, len(seeds)))}
    fp32_paths = {k: v for k, v in dens.items() if k.startswith("fp32")}
    batches = [int(b) for b in a.batches.split(",") if b.strip()]
    table = per_batch(fp32_paths, a.size, batches, flops, statistics.median(roof["fp32"]), a.reps) if batches else {}
    base = [float(results["fp32"][s]) for s in seeds]
    pairs = {}
    for name in dens:
        if name == "fp32":
            continue
        d, lo, hi = bootstrap_diff(base, [float(results[name][s]) for s in seeds])
        ratios = [b / f for f, b in zip(times["fp32"], times[name])]
        pairs[name] = {"ratio_over_fp32": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
                       "solve_rate_diff": d, "solve_rate_diff_ci95": [lo, hi], "ci_includes_0": lo <= 0 <= hi,
                       "answers_differ": sum(results[name][s] != results["fp32"][s] for s in seeds)}
    ref = pairs["fp32_reference"]
    print(json.dumps({"model": a.model, "n": a.n, "batch": len(timed), "size": a.size, "steps": a.steps, "seeds_from": a.seed,
                      "median_s": per["fp32"]["median_s"],  # as before this benchmark timed bf16 too
                      "threads": torch.get_num_threads(), "allocator": allocator_state(), "cpu_flags": cpu_flags(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg": [round(x, 2) for x in os.getloadavg()],
                      "capability": cap.to_dict(), "auto_picks": choose("auto").precision.value,
                      "gflop_per_sample_step": round(flops / 1e9, 3), "gflop_counted_by_flopcounter": round(counted / 1e9, 3),
                      "gflop_analytic": round(analytic / 1e9, 3), "precisions": per, "paired": pairs,
                      "fp32_fast": {"speedup_over_reference": ref["ratio_over_fp32"],
                                    "of_fp32_roofline": per["fp32"]["of_roofline"], "answers_differ": ref["answers_differ"],
                                    "targets": {"speedup": 2.0, "of_roofline": 0.6, "answers_differ": 0}},
                      "per_batch": table,
                      "ratio_bf16_over_fp32": pairs["bf16"]["ratio_over_fp32"] if "bf16" in pairs else None,
                      "targets": {"bf16_s": 10.0, "ratio": 0.35},
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}, indent=1))


if __name__ == "__main__":
    main()
