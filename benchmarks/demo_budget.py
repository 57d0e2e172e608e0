"""What `steplens demo` at its full sizes must compute, and the least time that takes on this CPU in fp32 (issue 35).

    OMP_NUM_THREADS=2 python benchmarks/demo_budget.py [--reps 5] [--target 180] [--counts PREVIOUS.json]

1. Network evaluations per stage: the demo's full config runs, one process, on a random model with the shipped `maze`
   model's architecture (its depth, patch, frames, heads) but width 16, so the count takes minutes, not hours. What the
   demo runs does not depend on the weights: every stage has a fixed schedule of runs (instances, seeds, steps,
   injections, skipped blocks, ensemble members). A forward counter on `VideoDiT` adds each call's batch size: the
   count is in sample-steps (one sample through the network once).
2. The cost of one sample-step of the shipped `maze` model at the demo's size (6x6) in fp32, 2 threads, at the demo's
   batch sizes (median of `--reps`), and its FLOPs (bench_sampling's count, attention included) against the fp32 matmul
   roofline measured in this process.
3. The demo's least wall time: sample-steps x measured cost (as fast as the network runs today), and sample-steps x
   FLOPs / roofline (as if every FLOP ran at the matmul roofline: no implementation can be faster). Both assume the
   two cores are always busy. Prints JSON with the CPU flags. `--counts` takes the counts of an earlier run's JSON
   (they do not depend on the machine) and only re-measures 2-3, e.g. on an idle machine.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from bench_sampling import cpu_flags, flops_per_sample_step, matmul_gflops
from steplens.demo import DemoConfig, _batch, run_stages
from steplens.models.dit import DiTConfig, VideoDiT
from steplens.models.registry import load
from steplens.models.serialize import export, load_meta
from steplens.runner import prepare
from steplens.tasks import get_task

# the functions the demo's stages call (looked up at call time), and the stage each one's network evaluations count for
STAGE_FUNCS = {
    ("steplens.probes.cos", "trace_x0"): "sample",
    ("steplens.probes.cos", "run_cos"): "cos",
    ("steplens.probes.behaviour", "run_behaviour"): "behaviour",
    ("steplens.demo", "null_cards"): "cards",
    ("steplens.probes.perturb", "run_perturb"): "perturb",
    ("steplens.probes.perturb", "cka_from_perturb"): "cka",
    ("steplens.probes.perturb", "run_cka"): "cka",
    ("steplens.probes.layers", "run_layers"): "layers",
    ("steplens.probes.depth", "run_thirds"): "layer thirds",
    ("steplens.ensemble", "compare"): "ensemble",
}


def count_demo(out: Path) -> dict[str, int]:
    """Sample-steps per demo stage at the full config, on a narrow random model of the maze model's architecture."""
    meta, _ = load_meta("maze")
    cfg = DiTConfig(**{**meta["model"], "dim": 16, "heads": 2, "tasks": tuple(meta["model"]["tasks"])})
    export(VideoDiT(cfg), out / "narrow")
    counts: Counter[str] = Counter()
    current: list[str] = []
    forward = VideoDiT.forward

    def counted(self, x, *a, **kw):
        counts[current[0] if current else "other"] += int(x.shape[0])
        return forward(self, x, *a, **kw)

    def wrap(fn, name):
        @functools.wraps(fn)
        def inner(*a, **kw):
            outer = not current
            if outer:
                current.append(name)
            try:
                return fn(*a, **kw)
            finally:
                if outer:
                    current.pop()
        return inner

    saved = []
    for (mod, attr), name in STAGE_FUNCS.items():
        m = importlib.import_module(mod)
        saved.append((m, attr, getattr(m, attr)))
        setattr(m, attr, wrap(getattr(m, attr), name))
    VideoDiT.forward = counted
    try:
        demo = DemoConfig.make(model=str(out / "narrow"))
        run_stages(demo, str(out / "demo"), ("cos", "perturb", "cka", "layers", "ensemble"), False, "cpu")
    finally:
        VideoDiT.forward = forward
        for m, attr, fn in saved:
            setattr(m, attr, fn)
    return dict(counts)


def sample_step_cost(batches: list[int], reps: int, size: int) -> dict[int, float]:
    """Median seconds per sample-step of the shipped maze model (fp32) at each batch size, at the demo's maze size."""
    den = load("maze").to_precision("fp32")
    task = get_task("maze")
    out = {}
    with torch.no_grad():
        for bs in batches:
            batch = prepare(den, task, [task.generate(s, size, n_frames=den.n_frames, cell_px=1) for s in range(40_000, 40_000 + bs)])
            x = torch.randn((bs, *batch.latent_shape), generator=torch.Generator().manual_seed(bs))
            sig = torch.full((bs,), 0.5)
            den(x, sig, batch.cond)
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                den(x, sig, batch.cond)
                ts.append(time.perf_counter() - t)
            out[bs] = statistics.median(ts) / bs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--target", type=float, default=180.0, help="The demo's wall-time target (s).")
    ap.add_argument("--counts", default="", help="An earlier run's JSON: reuse its sample-step counts, re-measure the costs.")
    args = ap.parse_args()
    cfg = DemoConfig()
    t0 = time.time()
    if args.counts:
        prev = json.loads(Path(args.counts).read_text())
        if prev["demo"]["n"] != cfg.stage_ns() or prev["demo"]["size"] != cfg.size:
            raise SystemExit(f"{args.counts} counted another demo config ({prev['demo']}); count again without --counts")
        counts = prev["sample_steps_per_stage"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            counts = count_demo(Path(tmp))
    count_s = time.time() - t0
    total = sum(counts.values())
    batches = sorted({_batch(n) for n in cfg.stage_ns().values()})
    cost = sample_step_cost(batches, args.reps, cfg.size)
    s_per = statistics.median(cost.values())
    flops, _, _ = flops_per_sample_step(load("maze").to_precision("fp32"), cfg.size)
    roof = matmul_gflops(torch.float32)
    at_measured = total * s_per
    at_roofline = total * flops / (roof * 1e9)
    print(json.dumps({
        "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "demo": {"size": cfg.size, "steps": cfg.steps, "n": cfg.stage_ns()},
        "sample_steps_per_stage": dict(sorted(counts.items(), key=lambda kv: -kv[1])), "sample_steps_total": total,
        "count_wall_s": round(count_s, 1),
        "fp32_ms_per_sample_step_by_batch": {str(b): round(v * 1e3, 3) for b, v in cost.items()},
        "gflop_per_sample_step": round(flops / 1e9, 3), "fp32_matmul_roofline_gflops": round(roof, 1),
        "least_wall_s": {"at_measured_speed": round(at_measured, 1), "at_fp32_roofline": round(at_roofline, 1)},
        "target_s": args.target, "target_reachable_at_roofline": at_roofline <= args.target,
    }, indent=1))


if __name__ == "__main__":
    main()
