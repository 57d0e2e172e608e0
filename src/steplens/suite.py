"""A benchmark-style score over several tasks: `steplens evaluate --task suite`, `steplens ensemble run --task suite`.

VBVR-Bench reports one number over many tasks: the mean of per-task scores, broken down by category.
The suite does the same on steplens' tasks: each task is run as its own ordinary run folder
(`OUT/<task>_<size>/`, resumable, reproducible alone), then

- per method and task: mean score and solve rate over its instances;
- suite score / solve rate: the mean over tasks of the per-task means (each task weighs the same,
  whatever its n), with a 95% CI from a stratified bootstrap (instances resampled within each task);
- per category: the same over the tasks of that category;
- with a baseline among the methods: every other method's paired difference of the suite numbers
  (the same instances of each task resampled together), which is what the paper's benchmark claim
  (ensemble 0.716 vs single 0.685 on VBVR-Bench) is about.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES: dict[str, str] = {
    "maze": "planning",
    "occlusion": "working memory",
    "shuttle": "working memory",
    "shuttle_near": "working memory",
    "shuttle_choice": "working memory",
    "rotate": "spatial transformation",
    "rotate_large": "spatial transformation",
    "tictactoe": "logic",
    "tictactoe_fork": "logic",
}
N_BOOT = 2000


def category(task: str) -> str:
    return CATEGORIES.get(task, "other")


def _boot_indices(n_per_task: Sequence[int], n_boot: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=(n_boot, n)) for n in n_per_task]


def _mean_of_means(values: Sequence[np.ndarray], idx: Sequence[np.ndarray]) -> np.ndarray:
    """(n_boot,) mean over tasks of each task's resampled mean."""
    return np.mean([v[i].mean(axis=1) for v, i in zip(values, idx)], axis=0)


def suite_summary(rows: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]], *, baseline: str | None = "single",
                  n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """rows[task][method] = per-instance dicts with "seed", "success", "score" (errors left out).

    Returns {"tasks": {task: {"category", "n", "methods": {method: {"score", "solve_rate"}}}},
             "methods": {method: {"score": [mean, lo, hi], "solve_rate": [...], "categories": {...},
                                  "diff_vs_<baseline>": {"score": [...], "solve_rate": [...]}}}}.
    Paired numbers use the instances (seeds) that every method of a task has.
    """
    tasks = sorted(rows, key=lambda t: (category(t), t))
    if not tasks:
        raise ValueError("a suite needs at least one task with results")
    methods = [m for m in rows[tasks[0]] if all(m in rows[t] for t in tasks)]
    common = {t: sorted(set.intersection(*({int(r["seed"]) for r in rows[t][m]} for m in methods))) for t in tasks}
    empty = [t for t in tasks if not common[t]]
    if empty:
        raise ValueError(f"no instance has results from every method in task(s) {empty}")
    table = {t: {m: {int(r["seed"]): r for r in rows[t][m]} for m in methods} for t in tasks}

    def values(m: str, what: str, ts: Sequence[str]) -> list[np.ndarray]:
        return [np.array([float(table[t][m][s][what]) for s in common[t]]) for t in ts]

    idx_all = _boot_indices([len(common[t]) for t in tasks], n_boot, seed)
    pos = {t: i for i, t in enumerate(tasks)}
    cats = sorted({category(t) for t in tasks})
    out_methods: dict[str, Any] = {}
    for m in methods:
        entry: dict[str, Any] = {}
        for what, key in (("score", "score"), ("success", "solve_rate")):
            v = values(m, what, tasks)
            boot = _mean_of_means(v, idx_all)
            entry[key] = [float(np.mean([x.mean() for x in v])), *map(float, np.percentile(boot, [2.5, 97.5]))]
        entry["categories"] = {}
        for c in cats:
            ts = [t for t in tasks if category(t) == c]
            v = values(m, "score", ts)
            boot = _mean_of_means(v, [idx_all[pos[t]] for t in ts])
            entry["categories"][c] = {"tasks": ts, "score": [float(np.mean([x.mean() for x in v])),
                                                             *map(float, np.percentile(boot, [2.5, 97.5]))]}
        out_methods[m] = entry
    if baseline in methods:
        for m in methods:
            if m == baseline:
                continue
            d = {}
            for what, key in (("score", "score"), ("success", "solve_rate")):
                diff = [a - b for a, b in zip(values(m, what, tasks), values(baseline, what, tasks))]
                boot = _mean_of_means(diff, idx_all)
                d[key] = [float(np.mean([x.mean() for x in diff])), *map(float, np.percentile(boot, [2.5, 97.5]))]
            out_methods[m]["diff_vs_" + baseline] = d
    per_task = {t: {"category": category(t), "n": len(common[t]),
                    "methods": {m: {"score": float(np.mean([float(table[t][m][s]["score"]) for s in common[t]])),
                                    "solve_rate": float(np.mean([float(table[t][m][s]["success"]) for s in common[t]]))}
                                for m in methods}} for t in tasks}
    return {"tasks": per_task, "methods": out_methods, "ci": f"stratified percentile bootstrap over instances within tasks, {n_boot} draws"}


def suite_lines(s: Mapping[str, Any], title: str) -> list[str]:
    """The suite as text: per task, then per method the suite score and solve rate [CI], categories, paired difference."""
    lines = [title, f"{'task':<12} {'category':<24} {'n':>4}  " + "  ".join(f"{m:>16}" for m in s["methods"])]
    for t, e in s["tasks"].items():
        lines.append(f"{t:<12} {e['category']:<24} {e['n']:>4}  "
                     + "  ".join(f"{e['methods'][m]['score']:>8.3f} ({100 * e['methods'][m]['solve_rate']:3.0f}%)" for m in s["methods"]))
    for m, e in s["methods"].items():
        sc, sr = e["score"], e["solve_rate"]
        lines.append(f"{m}: suite score {sc[0]:.3f} [{sc[1]:.3f}, {sc[2]:.3f}], solve rate {100 * sr[0]:.1f}% [{100 * sr[1]:.1f}, "
                     f"{100 * sr[2]:.1f}]; " + ", ".join(f"{c} {v['score'][0]:.3f}" for c, v in e["categories"].items()))
        for k, d in e.items():
            if k.startswith("diff_vs_"):
                lines.append(f"  {k}: score {d['score'][0]:+.3f} [{d['score'][1]:+.3f}, {d['score'][2]:+.3f}], solve rate "
                             f"{100 * d['solve_rate'][0]:+.1f} points [{100 * d['solve_rate'][1]:+.1f}, {100 * d['solve_rate'][2]:+.1f}]")
    lines.append(f"CI: {s['ci']}; the suite numbers are means over tasks (each task weighs the same).")
    return lines


def suite_sizes(tasks: Sequence[str], spec: str = "") -> dict[str, int]:
    """Each task's size: its default, or 'maze=6;rotate=11' for the named ones."""
    from .config import ConfigError, named_parts
    from .tasks import get_task

    sizes = {t: int(get_task(t).default_size) for t in tasks}
    for part, name, val in named_parts(spec):
        val = val or ""
        if name not in sizes or not val.strip().isdigit():
            raise ConfigError(f"--sizes: expected 'task=size;...' over the suite's tasks {list(tasks)}, got {part!r}")
        sizes[name] = get_task(name).check_size(int(val))
    return sizes


def model_tasks(den: Any) -> tuple[str, ...]:
    """The tasks a reference model was trained on (its task embedding's names)."""
    from .config import ConfigError

    tasks = getattr(getattr(getattr(den, "model", None), "cfg", None), "tasks", None)
    if not tasks:
        raise ConfigError("--task suite needs a reference model trained on several tasks (e.g. --model multi)")
    return tuple(tasks)


def rows_by_method(path: str | Path, method: str = "single") -> dict[str, list[dict[str, Any]]]:
    """A run's results.jsonl grouped by each row's "method" (rows without one belong to `method`)."""
    from .config import read_jsonl

    by: dict[str, list[dict[str, Any]]] = {}
    for r in read_jsonl(path):
        by.setdefault(r.get("method", method), []).append(r)
    return by


def run_suite(out: str | Path, sizes: Mapping[str, int], run_task: Callable[[str, int, Path], dict[str, list[dict[str, Any]]]], *,
              kind: str, config: Mapping[str, Any], baseline: str | None = None) -> dict[str, Any]:
    """Run every task into OUT/<task>_<size>/ with `run_task(task, size, folder) -> {method: rows}`, then summarise.

    Writes OUT/manifest.json, OUT/summary.json and OUT/summary.txt; returns the summary."""
    from .config import atomic_write_text, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "manifest.json", {"kind": kind, "config": dict(config), "sizes": dict(sizes)})
    rows = {}
    for task, size in sizes.items():
        got = run_task(task, size, out / f"{task}_{size}")
        rows[task] = {m: [r for r in rs if "error" not in r] for m, rs in got.items()}
    s = suite_summary(rows, baseline=baseline)
    summary = {"kind": kind, "config": dict(config), "sizes": dict(sizes), **s}
    write_json(out / "summary.json", summary)
    n = {t: e["n"] for t, e in s["tasks"].items()}
    atomic_write_text(out / "summary.txt", "\n".join(suite_lines(s, f"suite of {len(sizes)} tasks, instances per task {n}")) + "\n")
    return summary


__all__ = ["CATEGORIES", "category", "model_tasks", "rows_by_method", "run_suite", "suite_lines", "suite_sizes", "suite_summary"]
