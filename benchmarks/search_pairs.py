"""Paired differences between methods of one `steplens search run` folder (the README's search comparisons).

    python benchmarks/search_pairs.py RUN --budget 4 BASE:METHOD [BASE:METHOD ...]

Prints, per pair, METHOD minus BASE in solve-rate points with a paired percentile bootstrap 95% CI over the
instances both have (steplens.stats.bootstrap_diff, as `search run` computes its diff_vs_single). On a `--task suite`
folder (one run folder per task inside RUN) it prints the suite score and solve rate differences instead, with the
stratified bootstrap of `steplens.suite.suite_summary` (as the suite's diff_vs_single).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from steplens.config import read_jsonl
from steplens.stats import bootstrap_diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("pairs", nargs="+", metavar="BASE:METHOD")
    ap.add_argument("--budget", type=float, default=4.0)
    a = ap.parse_args()
    tasks = sorted(p.parent for p in Path(a.run).glob(f"*/results_b{a.budget:g}.jsonl"))
    if tasks and not (Path(a.run) / f"results_b{a.budget:g}.jsonl").exists():
        return suite_pairs(tasks, a.pairs, a.budget)
    by: dict[str, dict[int, float]] = {}
    for r in read_jsonl(Path(a.run) / f"results_b{a.budget:g}.jsonl"):
        by.setdefault(r["method"], {})[int(r["seed"])] = float(r["success"])
    for pair in a.pairs:
        base, _, method = pair.partition(":")
        if base not in by or method not in by:
            raise SystemExit(f"unknown method in {pair!r}; the run has {sorted(by)}")
        seeds = sorted(set(by[base]) & set(by[method]))
        d, lo, hi = bootstrap_diff([by[base][s] for s in seeds], [by[method][s] for s in seeds])
        print(f"{method} - {base} (n={len(seeds)}): {100 * d:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]")


def suite_pairs(folders: list[Path], pairs: list[str], budget: float) -> None:
    from steplens.suite import rows_by_method, suite_summary

    rows = {f.name: rows_by_method(f / f"results_b{budget:g}.jsonl") for f in folders}
    for pair in pairs:
        base, _, method = pair.partition(":")
        if any(base not in r or method not in r for r in rows.values()):
            raise SystemExit(f"unknown method in {pair!r}; the suite's tasks have {sorted(next(iter(rows.values())))}")
        s = suite_summary({t: {base: r[base], method: r[method]} for t, r in rows.items()}, baseline=base)
        d = s["methods"][method][f"diff_vs_{base}"]
        print(f"{method} - {base} (suite of {len(rows)} tasks): score {d['score'][0]:+.3f} [{d['score'][1]:+.3f}, {d['score'][2]:+.3f}], "
              f"solve rate {100 * d['solve_rate'][0]:+.1f} points [{100 * d['solve_rate'][1]:+.1f}, {100 * d['solve_rate'][2]:+.1f}]")


if __name__ == "__main__":
    main()
