"""Paired differences between methods of one `steplens search run` folder (the README's search comparisons).

    python benchmarks/search_pairs.py RUN --budget 4 BASE:METHOD [BASE:METHOD ...]

Prints, per pair, METHOD minus BASE in solve-rate points with a paired percentile bootstrap 95% CI over the
instances both have (steplens.stats.bootstrap_diff, as `search run` computes its diff_vs_single).
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


if __name__ == "__main__":
    main()
