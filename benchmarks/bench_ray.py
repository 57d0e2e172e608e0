"""Evaluation wall time locally vs on a local Ray cluster with 1 and 2 workers (same shards, same results).

    python benchmarks/bench_ray.py --n 64 --size 4 --steps 20 --batch 8 [--model maze]

Without --model, a tiny random reference model is exported to a temporary folder. Each variant
evaluates into a fresh run folder after a warm-up (Ray workers load the model once each); the
local path uses --threads (default: all of PyTorch's), each Ray worker one. Prints JSON, with whether all
three variants wrote identical sample files.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from steplens.allocator import allocator_state, keep_freed_memory
from steplens.evaluate import EvalConfig, evaluate
from steplens.runner import SamplingConfig
from steplens.models.serialize import export_random_tiny


def tiny_model(folder: Path) -> str:
    return export_random_tiny(folder / "model")


def timed(cfg: EvalConfig, out: Path, **kw) -> float:
    t = time.perf_counter()
    evaluate(None, cfg, out, progress=False, **kw)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="Model spec (default: a tiny random export).")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads for the local run (0: PyTorch's default).")
    a = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    if a.threads:
        torch.set_num_threads(a.threads)
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = a.model or tiny_model(root)
        cfg = EvalConfig(model=model, task="maze", size=a.size, n=a.n, batch=a.batch, save_frames=False,
                         sampling=SamplingConfig(steps=a.steps))
        warm = EvalConfig(model=model, task="maze", size=a.size, n=4, batch=2, save_frames=False, sampling=SamplingConfig(steps=1))
        timed(warm, root / "warm-local")
        wall = {"local": timed(cfg, root / "local")}
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        start_s = time.perf_counter() - t
        try:
            timed(warm, root / "warm-ray", ray_address="auto", num_workers=2)  # both workers load the model
            for w in (1, 2):
                wall[f"ray_{w}_worker{'s' if w > 1 else ''}"] = timed(cfg, root / f"ray{w}", ray_address="auto", num_workers=w)
        finally:
            ray.shutdown()
        runs = [root / "local", root / "ray1", root / "ray2"]
        texts = [{p.name: p.read_text() for p in (r / "samples").glob("*.json")} for r in runs]
    print(json.dumps({"allocator": allocator_state(), "model": a.model or "tiny-random", "n": a.n, "size": a.size, "steps": a.steps, "batch": a.batch,
                      "local_threads": torch.get_num_threads(), "ray_start_s": round(start_s, 2),
                      "wall_s": {k: round(v, 2) for k, v in wall.items()},
                      "speedup_2_vs_1_workers": round(wall["ray_1_worker"] / wall["ray_2_workers"], 2),
                      "identical_samples": texts[0] == texts[1] == texts[2]}))


if __name__ == "__main__":
    main()
