"""Solve rates of a model on instances it never trained on vs instances it did (the memorisation gap), per task.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/memorisation_gap.py --model multi --n 50 [--sizes maze=6;occlusion=16] [--tasks maze,rotate]

Per task (its default size unless --sizes): `n` unseen instances as `steplens evaluate` draws them
(`runner.held_out_instances` from seed 10000), and `n` distinct instances from the model's seen-set (walking the same
seeds, keeping those training drew). Same sampler (20 Euler steps) and noise seeds as evaluate. Prints one JSON line a task.
"""

from __future__ import annotations

import argparse
import json

from steplens.config import ConfigError, named_parts
from steplens.evaluate import eval_seeds, model_frames, summarize
from steplens.models.registry import load
from steplens.runner import SamplingConfig, held_out_instances
from steplens.seen import load_seen
from steplens.tasks import get_task


def seen_seeds(task, size: int, seed: int, n: int, n_frames: int, seen, walk: int = 20_000) -> list[int]:
    """The first `n` seeds from `seed` whose (distinct) instances are in `seen`."""
    out, taken = [], set()
    for s in range(seed, seed + walk):
        k = task.key(task.generate(s, size, n_frames=n_frames, cell_px=1))
        if k in seen and k not in taken:
            out.append(s)
            if len(out) == n:
                break
        taken.add(k)
    return out


def eval_rows(den, task: str, size: int, seeds: list[int]) -> list[dict]:
    """`steplens evaluate`'s per-sample results for `seeds` (20 Euler steps), in batches of 25, in seed order."""
    return [r for i in range(0, len(seeds), 25) for r in eval_seeds(den, task, size, seeds[i : i + 25], SamplingConfig())]


def rate(den, task: str, size: int, seeds: list[int]) -> dict:
    if not seeds:
        return {"n": 0, "solve_rate": None, "solve_rate_ci95": None}
    s = summarize(eval_rows(den, task, size, seeds))
    return {k: s[k] for k in ("n", "solve_rate", "solve_rate_ci95")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="multi")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=10_000)
    ap.add_argument("--tasks", default="", help="Comma-separated subset of the model's tasks (default: all; split a run over processes)")
    ap.add_argument("--sizes", default="", help="e.g. 'maze=6;occlusion=16' (others: the task's default size)")
    args = ap.parse_args()
    den = load(args.model)
    seen = load_seen(args.model)
    frames = model_frames(den, args.model)
    sizes = {name: int(v) for _, name, v in named_parts(args.sizes)} if args.sizes else {}
    for name in (args.tasks.split(",") if args.tasks else den.model.cfg.tasks):
        task = get_task(name)
        size = sizes.get(name, task.default_size)
        try:
            held = held_out_instances(task, size, args.seed, args.n, n_frames=frames, seen=seen)
            unseen, n_reserved = list(held.seeds), held.n_reserved
        except ConfigError:
            unseen, n_reserved = [], 0  # the level has fewer than n unseen instances
        row = {"task": name, "size": size, "n_reserved": n_reserved, "unseen": rate(den, name, size, unseen),
               "seen": rate(den, name, size, seen_seeds(task, size, args.seed, args.n, frames, seen))}
        u, s = row["unseen"]["solve_rate"], row["seen"]["solve_rate"]
        row["gap"] = None if u is None or s is None else round(s - u, 4)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
