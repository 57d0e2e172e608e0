"""Early screens of one `steplens search run` folder at every screening step, over the prior's and the cold seeds.

    python benchmarks/search_screen_steps.py RUN [--budget 4] [--steps-max 4]

For each screening step s (1..steps-max) and intrinsic early score, keeps as many of the run's K seeds as the budget
leaves room for and picks the final by agreement (by the early score when one survives), over the seeds sampled from
the prior and over the same seeds cold-started; prints each solve rate with its Wilson CI, and the oracle best of all K
cold seeds (the room a perfect screen of cold seeds would have). Reads the saved trajectories only (no model). The
rates are in-sample over s: pick a step on one run, report it on another.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from steplens.runner import SamplingConfig, held_out_seeds
from steplens.search.methods import SearchMethod, fit_m, method_nfe
from steplens.search.run import evaluate_methods, load_records
from steplens.stats import fmt_ci, wilson

INTRINSIC = ("decided", "ambiguity", "agreement", "stability")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--budget", type=float, default=4.0, help="in single runs")
    ap.add_argument("--steps-max", type=int, default=4)
    a = ap.parse_args()
    root = Path(a.run)
    cfg = json.loads((root / "manifest.json").read_text())["config"]
    if "cold_seeds" not in cfg:
        raise SystemExit(f"{root} has no cold-started seeds (sampled before they were added); run `steplens search run` anew")
    sampling = SamplingConfig(**cfg["sampling"])
    seeds = held_out_seeds(cfg["seed"], len(list((root / "samples").glob("*.json"))))  # a run covers n consecutive seeds
    recs = load_records(root, cfg["task"], cfg["size"], seeds, cfg["n_frames"])
    k, unit = cfg["k"], method_nfe(SearchMethod("single", "single"), sampling)
    methods = [SearchMethod(f"best_of_{k}_cold_oracle", "best_of_k", k=k, m=k, final="oracle", cold=True)]
    for s in range(1, a.steps_max + 1):
        m = fit_m(k, s, a.budget * unit, sampling)
        if m < 1:
            continue
        for score in INTRINSIC:
            for cold in (False, True):
                methods.append(SearchMethod(f"{'cold' if cold else 'prior'}_{score}_s{s}_m{m}", "early_screen", k=k, s=s, m=m, score=score,
                                            final="agreement" if m > 1 else "early", cold=cold))
    res = evaluate_methods(recs, methods, sampling)
    print(f"{cfg['task']} {cfg['size']}x{cfg['size']}, n={len(recs)}, K={k}, budget {a.budget:g} single runs ({a.budget * unit:g} NFE)")
    for m in methods:
        wins = [bool(r["success"]) for r in res[m.name]]
        print(f"{m.name:28s} NFE {method_nfe(m, sampling):4d}  {fmt_ci(float(np.mean(wins)), wilson(sum(wins), len(wins)))}")


if __name__ == "__main__":
    main()
