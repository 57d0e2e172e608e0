"""Two models (say, two training stages) on the same unseen instances, per task: each solve rate and the paired difference.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/stage_compare.py --before ckpt/multi8/model --after multi --n 50 [--tasks maze,rotate]

Per task of `--after` (its default size): `n` instances drawn as `steplens evaluate --model AFTER` draws them
(`runner.held_out_instances` from seed 10000 with AFTER's seen-set and reserved bucket). When BEFORE is an earlier stage
of AFTER, its seen-set is a subset of AFTER's, so these instances are unseen by both. Same sampler (20 Euler steps) and
noise seeds for both models; the difference AFTER - BEFORE with Newcombe's paired interval and the exact McNemar p.
Prints one JSON line a task.
"""

from __future__ import annotations

import argparse
import json

from memorisation_gap import eval_rows
from steplens.evaluate import model_frames
from steplens.models.registry import load
from steplens.runner import held_out_instances
from steplens.seen import load_seen
from steplens.stats import p_value, paired_diff, wilson
from steplens.tasks import get_task


def successes(den, task: str, size: int, seeds: list[int]) -> list[float]:
    """0/1 per seed, in seed order (a sample that errored counts as unsolved, so the pairs stay aligned)."""
    return [float(bool(r.get("success", False))) for r in eval_rows(den, task, size, seeds)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default="multi")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=10_000)
    ap.add_argument("--tasks", default="")
    args = ap.parse_args()
    before, after = load(args.before), load(args.after)
    seen = load_seen(args.after)
    frames = model_frames(after, args.after)
    for name in args.tasks.split(",") if args.tasks else after.model.cfg.tasks:
        task = get_task(name)
        size = task.default_size
        held = held_out_instances(task, size, args.seed, args.n, n_frames=frames, seen=seen)
        seeds = list(held.seeds)
        a, b = successes(before, name, size, seeds), successes(after, name, size, seeds)
        d, lo, hi, rec = paired_diff(a, b, rates=True)
        _, only_a, only_b, _ = rec["table"]  # both, before only, after only, neither
        print(json.dumps({"task": name, "size": size, "n": len(seeds), "n_reserved": held.n_reserved,
                          "before": {"solved": int(sum(a)), "ci95": wilson(int(sum(a)), len(a))},
                          "after": {"solved": int(sum(b)), "ci95": wilson(int(sum(b)), len(b))},
                          "diff": round(d, 4), "diff_ci95": [round(lo, 4), round(hi, 4)],
                          "discordant": {"after_only": only_b, "before_only": only_a},
                          "mcnemar_p": p_value(rec)}), flush=True)


if __name__ == "__main__":
    main()
