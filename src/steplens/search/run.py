# long module: sampling, the run folder, the comparison and the sweep share one record format and one folder; split, each would re-read the others.
"""Running test-time search on task instances: shared K-seed trajectories per instance, comparisons, sweeps, reports.

One shard = one instance (so a sample's bits never depend on which other instances were batched
with it, and a run can be extended to more instances). Its K seeds run as one batch; a step
callback decodes every step's x0_hat onto the task's block grid. Because the sampler is
deterministic, a seed continued from its latent after s steps ends where its uninterrupted
trajectory ends, so every (K, s, m) configuration and every baseline is a selection over the same
K trajectories (`methods.select`): a sweep costs one run of its largest K. `screen_latents` is the
method as one would deploy it (K seeds for s steps, then only m continue from their saved latents);
tests check that it keeps the same seeds and ends at the same latents.

Run folder: manifest.json (config without n or budget, so `search run` and `search sweep` share a
folder and a run extends to more instances), samples/<id>.json (per-seed ground truth and the
controls), plans/<id>.npz (early plans and finals as block grids), then summary.json/.txt,
methods.md, curve.png (sweep) and figures.json.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import ConfigError, atomic_write_text, to_dict, write_json
from ..ensemble import EnsembleConfig, run_ensemble, run_trajectories
from ..models.protocol import Cond
from ..precision import precision_of
from ..runner import SamplingConfig, noise_seed, prepare
from ..sampling import StepEvent, get_sampler, run, seeded_noise
from ..stats import calibration_split, fmt_ci, holm, holm_levels, interval, p_value, paired_diff, paired_rate_diff, wilson
from ..tasks import get_task
from .methods import (COLD, PAPER_ENSEMBLE, InstanceRecord, SearchMethod, baseline_methods, check_budget, method_nfe, screen_methods,
                      select)

# -- sampling ---------------------------------------------------------------------------------------
@torch.no_grad()
def screen_latents(denoiser: Any, x: Tensor, sigmas: Tensor, cond: Cond, k: int, s: int, m: int,
                   score: Callable[[np.ndarray, np.ndarray | None], np.ndarray], decode: Callable[[Tensor], np.ndarray], *,
                   sampler: str = "euler") -> tuple[Tensor, list[list[int]]]:
    """Early screening as deployed: B*K seeds (seed-major per instance) run s steps as one batch, the m best per instance
    by `score` (on `decode`d x0_hat after s steps) continue from their saved latents.

    Returns: (B*m, C, F, H, W) final latents, best early score first, and the kept seed indices per instance.
    """
    b = x.shape[0] // k
    if b * k != x.shape[0] or not 1 <= m <= k or not 1 <= s < len(sigmas) - 1:
        raise ValueError(f"need a batch of B*k trajectories, 1 <= m <= k and 1 <= s < steps; got {x.shape[0]}, k={k}, m={m}, s={s}")
    make = get_sampler(sampler)
    seen: list[StepEvent] = []
    x_s = run(make(denoiser, x, sigmas[: s + 1], cond), seen.append)
    plans = decode(seen[-1].x0_hat)
    prev = decode(seen[-2].x0_hat) if s >= 2 else None
    kept = []
    for i in range(b):
        rows = slice(i * k, (i + 1) * k)
        sc = score(plans[rows], None if prev is None else prev[rows])
        kept.append(sorted(range(k), key=lambda j: (-sc[j], j))[:m])
    idx = [i * k + j for i, js in enumerate(kept) for j in js]
    out = run(make(denoiser, x_s[idx], sigmas[s:], cond.index(idx), first_step=s))
    return out, kept


@dataclass(frozen=True)
class SearchShard:
    """One instance, as shipped to a worker: a model spec, no tensors."""

    model: str
    task: str
    size: int
    seed: int
    k: int
    sampling: SamplingConfig
    precision: str = "fp32"  # the driver's network precision (precision_of its denoiser), applied by the worker too
    device: str = "auto"


def sample_trajectories(denoiser: Any, task_name: str, size: int, seed: int, k: int, sampling: SamplingConfig) -> dict[str, Any]:
    """K seeds of one instance as one batch, every step's x0_hat decoded onto the block grid, plus the two controls.

    The network runs in the denoiser's precision (`den.to_precision`, steplens.precision); the sampler state stays float32.

    The same K seeds also run cold-started (noise * COLD.noise_scale, the single_cold control's start).

    Returns a dict with "plans" (S, K, T, Hb, Wb, 3) uint8, "finals" (K, T, Hb, Wb, 3) uint8, "cold_plans", "cold_finals" and the
    JSON-ready result ("traj_success", "traj_score", "cold_traj_success", "cold_traj_score", "controls").
    """
    task = get_task(task_name)
    inst = task.generate(int(seed), size, n_frames=getattr(denoiser, "n_frames", 4), cell_px=1)
    batch = prepare(denoiser, task, [inst])
    dev = denoiser.device
    grids = lambda lat: np.stack([task.video_blocks(inst, v).round().astype(np.uint8) for v in denoiser.decode(lat)])  # noqa: E731
    x = seeded_noise(batch.latent_shape, [noise_seed(int(seed), j) for j in range(k)], device=dev)
    sigmas = sampling.sigmas(denoiser).to(dev)

    def trajectories(x0: Tensor) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        plans: list[np.ndarray] = []
        lat = run(get_sampler(sampling.sampler)(denoiser, x0, sigmas, batch.cond.repeat(k)), lambda e: plans.append(grids(e.x0_hat.float())))
        finals = grids(lat.float())
        return np.stack(plans), finals, [task.score(inst, f) for f in finals]

    plans, finals, scores = trajectories(x)
    cold_plans, cold_finals, cold_scores = trajectories(x * COLD.noise_scale)  # the same seeds, cold-started
    cold = run_trajectories(denoiser, task_name, size, [seed], sampling, EnsembleConfig(k=1, window=(0, 0)), noise_scale=COLD.noise_scale)
    ens = run_ensemble(denoiser, task_name, size, [seed], sampling, PAPER_ENSEMBLE)[0]
    result = {"seed": int(seed), "traj_success": [bool(s.success) for s in scores], "traj_score": [float(s.score) for s in scores],
              "cold_traj_success": [bool(s.success) for s in cold_scores], "cold_traj_score": [float(s.score) for s in cold_scores],
              "controls": {"single_cold": {"success": bool(cold.scores[0][0].success), "score": float(cold.scores[0][0].score)},
                           "ensemble": {"success": bool(ens["success"]), "score": float(ens["score"])}}}
    return {"plans": plans, "finals": finals, "cold_plans": cold_plans, "cold_finals": cold_finals, "result": result}


def search_shard(shard: SearchShard, denoiser: Any | None = None) -> list[dict[str, Any]]:
    from ..distributed import worker_model

    den = denoiser if denoiser is not None else worker_model(shard.model, shard.device, shard.precision)
    return [sample_trajectories(den, shard.task, shard.size, shard.seed, shard.k, shard.sampling)]


def sample_key(task: str, size: int, seed: int) -> str:
    return f"{task}_{size}_{seed:010d}"


def _config(denoiser: Any, model: str | None, task: str, size: int, seed: int, sampling: SamplingConfig, k: int) -> dict[str, Any]:
    return {"model": model or getattr(denoiser, "name", type(denoiser).__name__), "task": task, "size": size, "seed": seed,
            "sampling": to_dict(sampling), "k": k, "precision": precision_of(denoiser), "n_frames": int(getattr(denoiser, "n_frames", 4)),
            "ensemble": to_dict(PAPER_ENSEMBLE), "cold_noise_scale": COLD.noise_scale, "cold_seeds": k}


def collect(denoiser: Any, out: str | Path, task: str, size: int, n: int, seed: int, sampling: SamplingConfig, k: int, *,
            ray_address: str | None = None, num_workers: int | None = None, model: str | None = None, device: str = "auto",
            progress: bool = True, allow_seen: bool = False) -> tuple[Any, list[InstanceRecord]]:
    """Sample (or resume) the K-seed trajectories of n held-out instances into run folder `out`; returns (ProbeRun, records).

    Ray workers load `model` on `device` ("auto": CUDA where the worker has one) in the denoiser's precision.
    """
    from ..runs import instance_bar

    from ..distributed import map_shards
    from ..evaluate import evaluation_instances
    from ..probes.common import ProbeRun, save_npz

    get_task(task)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    spec = model or getattr(denoiser, "name", None)
    if ray_address is not None and not isinstance(spec, str):
        raise ConfigError("a Ray run needs a model spec the workers can load (a shipped name, a path or wan:DIR)")
    held = evaluation_instances(denoiser, str(spec), task, size, seed, n, allow_seen=allow_seen)  # fixed in the manifest before any shard
    prun = ProbeRun(out, "search", _config(denoiser, model, task, size, seed, sampling, k), held=held)
    folder = prun.folder
    seeds = list(held.seeds)
    marked = {s for s, m in zip(held.seeds, held.seen) if m}
    todo = [SearchShard(str(spec), task, size, s, k, sampling, precision_of(denoiser), device) for s in seeds
            if not folder.done(sample_key(task, size, s))]
    (prun.root / "plans").mkdir(exist_ok=True)
    with instance_bar(progress) as bar:
        tid = bar.add_task(f"search {task} {size}x{size}, {k} seeds", total=len(seeds), completed=len(seeds) - len(todo))

        def commit(i: int, rows: list[dict[str, Any]]) -> None:
            for r in rows:
                key = sample_key(task, size, r["result"]["seed"])
                if r["result"]["seed"] in marked:
                    r["result"]["seen_in_training"] = True
                save_npz(prun.root / "plans" / f"{key}.npz", plans=r["plans"], finals=r["finals"],  # before the sample: it marks done
                         cold_plans=r["cold_plans"], cold_finals=r["cold_finals"])
                folder.write(key, r["result"])
                bar.advance(tid)

        fn = search_shard if ray_address is not None else partial(search_shard, denoiser=denoiser)
        map_shards(fn, todo, ray_address=ray_address, num_workers=num_workers, on_result=commit)
    return prun, load_records(prun.root, task, size, seeds, int(folder.config["n_frames"]))


def load_records(root: str | Path, task: str, size: int, seeds: Sequence[int], n_frames: int) -> list[InstanceRecord]:
    """The saved trajectories of `seeds` (no model needed)."""
    import json

    t = get_task(task)
    root = Path(root)
    out = []
    for s in seeds:
        key = sample_key(task, size, s)
        res = json.loads((root / "samples" / f"{key}.json").read_text())
        arr = np.load(root / "plans" / f"{key}.npz")
        inst = t.generate(int(s), size, n_frames=n_frames, cell_px=1)
        cold = None
        if "cold_plans" in arr.files:
            cold = InstanceRecord(int(s), task, inst, arr["cold_plans"], arr["cold_finals"], np.array(res["cold_traj_success"], bool),
                                  np.array(res["cold_traj_score"], float), res["controls"])
        out.append(InstanceRecord(int(s), task, inst, arr["plans"], arr["finals"], np.array(res["traj_success"], bool),
                                  np.array(res["traj_score"], float), res["controls"], cold))
    return out


# -- comparing methods ---------------------------------------------------------------------------
def evaluate_methods(records: Sequence[InstanceRecord], methods: Sequence[SearchMethod], sampling: SamplingConfig) -> dict[str, list[dict[str, Any]]]:
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must be unique, got {names}")
    return {m.name: [select(m, r, sampling) for r in records] for m in methods}


def _is_baseline(m: SearchMethod) -> bool:
    return m.kind != "early_screen" and not m.uses_ground_truth


def summarize(results: dict[str, list[dict[str, Any]]], methods: Sequence[SearchMethod], sampling: SamplingConfig) -> dict[str, dict[str, Any]]:
    """Per method: NFE, solve rate with Wilson CI, paired differences (Newcombe's interval) vs single and vs the best baseline at its NFE.

    The best baseline of a method: among the methods that are not early screens and need no ground truth, spend no more
    NFE and use task rules only if it does, the one with the highest solve rate on a calibration half of the instances;
    the difference to it is measured on the held-out half. The differences vs single form one family: each row also
    has its exact McNemar p, the Holm-adjusted p and the CI at its Holm step-down level (`diff_vs_single_holm`).
    """
    rates = {m.name: float(np.mean([r["success"] for r in results[m.name]])) if results[m.name] else float("nan") for m in methods}
    nfes = {m.name: method_nfe(m, sampling) for m in methods}
    wins = lambda name: [float(r["success"]) for r in results[name]]  # noqa: E731
    n_all = min((len(rs) for rs in results.values()), default=0)
    cal, held, split = calibration_split(n_all)
    cal_rate = {m.name: float(np.mean(np.asarray(wins(m.name))[cal])) if len(results[m.name]) == n_all and n_all else float("nan")
                for m in methods}
    out = {}
    for m in methods:
        rs = results[m.name]
        k = sum(bool(r["success"]) for r in rs)
        row: dict[str, Any] = {"name": m.name, "kind": m.kind, "k": m.k, "s": m.s, "m": m.m, "score": m.score or None, "final": m.final, "cold": m.cold,
                               "nfe": nfes[m.name], "n": len(rs), "solved": k, "solve_rate": rates[m.name], "ci95": list(wilson(k, len(rs))),
                               "uses_ground_truth": m.uses_ground_truth, "uses_task_rules": m.uses_task_rules}
        if "single" in results and m.name != "single" and rs:
            *d, rec = paired_diff(wins("single"), wins(m.name), rates=True)
            row["diff_vs_single"], row["diff_vs_single_stats"] = list(d), rec
        base = [b for b in methods if _is_baseline(b) and b.name != m.name and nfes[b.name] <= nfes[m.name]
                and (m.uses_task_rules or not b.uses_task_rules)]
        if base and rs and len(rs) == n_all:
            best = max(base, key=lambda b: (cal_rate[b.name], -nfes[b.name]))
            row["best_baseline"] = best.name
            row["diff_vs_best_baseline"] = list(paired_rate_diff(np.asarray(wins(best.name))[held], np.asarray(wins(m.name))[held]))
            row["best_baseline_selection"] = (f"chosen on the calibration half (even instances, n={len(cal)}), the difference on the "
                                              f"held-out half (odd instances, n={len(held)})" if split else "chosen in-sample (n < 4)")
        out[m.name] = row
    family = [k for k, r in out.items() if "diff_vs_single_stats" in r]
    ps = [p_value(out[k]["diff_vs_single_stats"]) for k in family]
    for k, p, ph, level in zip(family, ps, holm(ps), holm_levels(ps)):
        out[k]["diff_vs_single_holm"] = {"p": p, "p_holm": ph, "level": level, "family": len(family),
                                         "ci": list(interval(out[k]["diff_vs_single_stats"], level))}
    return out


def method_table(per: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table of `summarize` rows (the diff vs single raw and at its Holm level across the table)."""
    lines = ["| method | NFE | uses | solve rate [95% CI] | diff vs single [95% CI] | Holm-adjusted CI, p | best baseline at <= NFE "
             "(calibration half) | diff vs it, held-out half [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for name, s in per.items():
        uses = "ground truth (oracle)" if s["uses_ground_truth"] else ("task rules" if s["uses_task_rules"] else "-")
        d1, d2, h = s.get("diff_vs_single"), s.get("diff_vs_best_baseline"), s.get("diff_vs_single_holm")
        adj = f"[{h['ci'][0]:.3f}, {h['ci'][1]:.3f}], {h['p_holm']:.2g}" if h else "-"
        lines.append(f"| {name} | {s['nfe']} | {uses} | {fmt_ci(s['solve_rate'], s['ci95'])} | {fmt_ci(d1[0], d1[1:]) if d1 else '-'} | "
                     f"{adj} | {s.get('best_baseline', '-')} | {fmt_ci(d2[0], d2[1:]) if d2 else '-'} |")
    return lines


def default_methods(budget: float, k: int, screen_step: int, sampling: SamplingConfig, task: str) -> list[SearchMethod]:
    """The baselines at `budget` single runs and one early screen per early score (k seeds, screened after screen_step)."""
    check_budget(budget, screen_step, sampling)
    ks = k
    screens = screen_methods(budget, ks, screen_step, sampling, task)
    while not screens and ks > 1:  # k seeds do not fit the budget at this screen step: fewer seeds
        ks -= 1
        screens = screen_methods(budget, ks, screen_step, sampling, task)
    return [*baseline_methods(budget, k, sampling, task), *screens]


def run_search(denoiser: Any, task: str, size: int, n: int, seed: int, sampling: SamplingConfig, out: str | Path, *, budget: float = 4.0,
               k: int = 12, screen_step: int = 4, ray_address: str | None = None, num_workers: int | None = None,
               model: str | None = None, device: str = "auto", progress: bool = True, methods: Sequence[SearchMethod] | None = None,
               allow_seen: bool = False) -> dict[str, Any]:
    """Compare the test-time methods at `budget` single runs of compute on n held-out instances (resumable; Ray with ray_address).

    Writes summary.json (per method: name, nfe, solve_rate, ci95, diff_vs_single, diff_vs_best_baseline, uses_ground_truth,
    uses_task_rules), summary.txt, methods.md, results.jsonl and compare.png into `out`; returns the summary.
    """
    methods = list(methods) if methods is not None else default_methods(budget, k, screen_step, sampling, task)
    for m in methods:
        m.check(sampling, k)
    prun, records = collect(denoiser, out, task, size, n, seed, sampling, k, ray_address=ray_address,
                            num_workers=num_workers, model=model, device=device,
                            progress=progress, allow_seen=allow_seen)
    results = evaluate_methods(records, methods, sampling)
    per = summarize(results, methods, sampling)
    prun.folder.write_jsonl(f"results_b{budget:g}.jsonl", [{"method": k_, **r} for k_, rs in results.items() for r in rs])
    unit = method_nfe(SearchMethod("single", "single"), sampling)
    computed = 2 * k * unit + method_nfe(SearchMethod("single_cold", "single_cold"), sampling) + method_nfe(SearchMethod("ensemble", "ensemble"), sampling)
    md = [f"{task} {size}x{size}, n={n} (held out by content, seeds walked from {seed}), {sampling.sampler} {sampling.steps} steps, {precision_of(denoiser)}, "
          f"budget {budget:g} single runs = {budget * unit:g} NFE per instance, {k} seeds per instance", "", *method_table(per), "",
          f"NFE: what each method spends per instance. The run computed {k} full trajectories from the prior's noise, the same {k} "
          "seeds cold-started, and the two controls per instance "
          f"({computed} NFE) "
          "and evaluates every method on them (a survivor continued from its latent after s steps ends where its full trajectory ends)."]
    atomic_write_text(prun.root / f"methods_b{budget:g}.md", "\n".join(md) + "\n")
    _bar_plot(prun, per, f"{n} {task} {size}x{size} instances, budget {budget:g} single runs ({budget * unit:g} NFE)")
    summary = {"kind": "search-run", "task": task, "size": size, "n": n, "seed": seed, "budget": budget, "budget_nfe": budget * unit,
               "k": k, "screen_step": screen_step, "precision": precision_of(denoiser), "nfe_computed_per_instance": computed, "methods": per}
    return _finish(prun, summary, "\n".join(md))


def _finish(prun: Any, summary: dict[str, Any], text: str) -> dict[str, Any]:
    """ProbeRun.finish, keeping the figures an earlier command (run or sweep) listed for this shared folder."""
    import json

    old = prun.root / "figures.json"
    mine = {f["path"] for f in prun.figures}
    if old.exists():
        prun.figures[:0] = [f for f in json.loads(old.read_text()) if f["path"] not in mine and (prun.root / f["path"]).exists()]
    return prun.finish(summary, text)


def _bar_plot(prun: Any, per: dict[str, dict[str, Any]], what: str) -> None:
    from ..probes.common import plt

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(8, 0.32 * len(per) + 1.2))
    ys = np.arange(len(per))[::-1]
    rates = np.array([s["solve_rate"] for s in per.values()])
    err = np.array([[r - s["ci95"][0], s["ci95"][1] - r] for r, s in zip(rates, per.values())]).T
    colors = ["#bbb" if s["uses_ground_truth"] else ("#cc6677" if s["uses_task_rules"] else "#4477aa") for s in per.values()]
    ax.barh(ys, rates, xerr=err, color=colors, capsize=3)
    ax.set_yticks(ys, [f"{k} ({s['nfe']} NFE)" for k, s in per.items()], fontsize=7)
    ax.set_xlabel("solve rate (95% Wilson CI)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(prun.figure("compare.png", "Test-time search at equal compute",
                            f"Solve rate per method on {what}. Grey: needs ground truth (oracle); red: uses task rules; blue: neither."), dpi=120)
    pyplot.close(fig)


# -- sweeps ---------------------------------------------------------------------------------------
def sweep_grid(budgets: Sequence[float], ks: Sequence[int], ss: Sequence[int], sampling: SamplingConfig, task: str,
               k_max: int) -> list[SearchMethod]:
    """Baselines at every budget plus early screens for every (budget, K, s) that fits (m: as many as fit), unique by name."""
    out: dict[str, SearchMethod] = {}
    for b in budgets:
        for m in baseline_methods(b, k_max, sampling, task):
            out.setdefault(m.name, m)
        for k in ks:
            for s in ss:
                if k <= k_max and s < sampling.steps:
                    for m in screen_methods(b, k, s, sampling, task):
                        out.setdefault(m.name, m)
    return list(out.values())


def _family(m: SearchMethod) -> str:
    cold = "cold_" if m.cold else ""
    if m.kind == "early_screen":
        return f"early_screen_{cold}{m.score}_{m.final}"
    if m.kind == "best_of_k":
        return f"best_of_k_{cold}{m.final}"
    return m.kind


def curve_points(per: dict[str, dict[str, Any]], methods: Sequence[SearchMethod], budgets: Sequence[float], k_max: int, screen_step: int,
                 sampling: SamplingConfig) -> dict[str, list[dict[str, Any]]]:
    """Per family, one point per budget by a rule fixed in advance (not picked on the data): best_of_k with K = budget;
    early_screen screened after screen_step steps with the most seeds (at most 3 x budget) of the grid that leave room for a survivor,
    and as many survivors as fit."""
    unit = method_nfe(SearchMethod("single", "single"), sampling)
    curves: dict[str, list[dict[str, Any]]] = {}
    for b in budgets:
        kb = max(1, min(k_max, int(b)))
        screens = [m for m in methods if m.kind == "early_screen" and m.s == screen_step and m.k <= 3 * b and method_nfe(m, sampling) <= b * unit]
        best = max(((m.k, m.m) for m in screens), default=None)
        for m in methods:
            if (m.kind == "best_of_k" and m.k == kb) or (m.kind == "early_screen" and m in screens and (m.k, m.m) == best):
                curves.setdefault(_family(m), []).append({"budget": b, **per[m.name]})
    for name in ("single", "single_cold", "ensemble"):
        if name in per:
            curves[name] = [{"budget": per[name]["nfe"] / unit, **per[name]}]
    return curves


def select_per_budget(results: dict[str, list[dict[str, Any]]], methods: Sequence[SearchMethod], budgets: Sequence[float],
                      sampling: SamplingConfig) -> tuple[dict[str, dict[str, dict[str, Any]]], str]:
    """Per method family and budget, the best method chosen out of sample: (selected, selection text).

    Among the family's methods that spend at most `budget` single runs, the one with the highest solve rate on the calibration
    half of the instances (stats.calibration_split; ties: fewer NFE, then name). Its numbers come from the held-out half only:
    solve rate with Wilson CI and the paired difference to single (Newcombe's interval). Below 4 instances there is no split
    and the choice is in-sample (the text says so). selected[family][f"{budget:g}"] = {method, nfe, candidates, calibration,
    n, solved, solve_rate, ci95, diff_vs_single}.
    """
    lengths = {len(results[m.name]) for m in methods}
    if len(lengths) > 1:
        raise ConfigError(f"every method needs the same instances, got {sorted(lengths)} results")
    n_all = lengths.pop() if lengths else 0
    cal, held, split = calibration_split(n_all)
    unit = method_nfe(SearchMethod("single", "single"), sampling)
    nfes = {m.name: method_nfe(m, sampling) for m in methods}
    wins = {m.name: np.array([float(r["success"]) for r in results[m.name]]) for m in methods}
    single = wins.get("single")
    selected: dict[str, dict[str, dict[str, Any]]] = {}
    for fam in sorted({_family(m) for m in methods}):
        for b in budgets:
            fit = [m for m in methods if _family(m) == fam and nfes[m.name] <= b * unit]
            if not fit or not n_all:
                continue
            best = min(fit, key=lambda m: (-float(wins[m.name][cal].mean()), nfes[m.name], m.name))
            w = wins[best.name][held]
            row: dict[str, Any] = {"method": best.name, "nfe": nfes[best.name], "candidates": len(fit),
                                   "calibration": {"n": len(cal), "solved": int(wins[best.name][cal].sum()),
                                                   "solve_rate": float(wins[best.name][cal].mean())},
                                   "n": len(held), "solved": int(w.sum()), "solve_rate": float(w.mean()),
                                   "ci95": list(wilson(int(w.sum()), len(held))),
                                   "uses_ground_truth": best.uses_ground_truth, "uses_task_rules": best.uses_task_rules}
            if single is not None and best.name != "single":
                row["diff_vs_single"] = list(paired_rate_diff(single[held], w))
            selected.setdefault(fam, {})[f"{b:g}"] = row
    if split:
        text = (f"within each family and budget, the method with the highest solve rate on the calibration half (even instances, "
                f"n={len(cal)}; ties: fewer NFE), reported on the held-out half (odd instances, n={len(held)}): solve rate "
                "[Wilson 95% CI] and paired difference to single [Newcombe 95% CI]")
    else:
        text = f"chosen in-sample (n={n_all} < 4, too few to split): the numbers are from the instances the choice was made on"
    return selected, text


def selection_table(selected: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """A markdown table of `select_per_budget` rows."""
    lines = ["| family | budget | chosen (calibration half) | NFE | of | calibration solve rate | held-out solve rate [95% CI] | "
             "held-out diff vs single [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for fam, per_b in selected.items():
        for b, r in per_b.items():
            d = r.get("diff_vs_single")
            cal = r["calibration"]
            lines.append(f"| {fam} | {b} | {r['method']} | {r['nfe']} | {r['candidates']} | {cal['solved']}/{cal['n']} | "
                         f"{fmt_ci(r['solve_rate'], r['ci95'])} ({r['solved']}/{r['n']}) | {fmt_ci(d[0], d[1:]) if d else '-'} |")
    return lines


def run_sweep(denoiser: Any, task: str, size: int, n: int, seed: int, sampling: SamplingConfig, out: str | Path, *,
              budgets: Sequence[float] = (1, 2, 4, 8), ks: Sequence[int] = (4, 8, 12), ss: Sequence[int] = (1, 2, 3, 4, 6, 8),
              k: int = 12, screen_step: int = 4, ray_address: str | None = None, num_workers: int | None = None,
              model: str | None = None, device: str = "auto", progress: bool = True, allow_seen: bool = False) -> dict[str, Any]:
    """Sweep K, s and m over budgets on one set of K-seed trajectories; writes sweep.json, sweep.md, curve.png, summary.json."""
    from ..probes.common import plt

    methods = sweep_grid(budgets, ks, ss, sampling, task, k)
    prun, records = collect(denoiser, out, task, size, n, seed, sampling, k, ray_address=ray_address,
                            num_workers=num_workers, model=model, device=device,
                            progress=progress, allow_seen=allow_seen)
    results = evaluate_methods(records, methods, sampling)
    per = summarize(results, methods, sampling)
    curves = curve_points(per, methods, budgets, k, screen_step, sampling)
    selected, selection = select_per_budget(results, methods, budgets, sampling)
    unit = method_nfe(SearchMethod("single", "single"), sampling)
    write_json(prun.root / "sweep.json", {"budgets": list(budgets), "unit_nfe": unit, "curves": curves, "selection": selection,
                                          "selected": selected, "methods": per})
    head = (f"{task} {size}x{size}, n={n} (held out by content, seeds walked from {seed}), {sampling.sampler} {sampling.steps} steps, {precision_of(denoiser)}, "
            f"{k} seeds per instance; NFE of one single run: {unit}")
    by_nfe = dict(sorted(per.items(), key=lambda kv: (kv[1]["nfe"], kv[0])))
    md = [head, "", f"Best per family and budget: {selection}.", "", *selection_table(selected), "",
          "Every method on all instances (descriptive: nothing is chosen on this table):", "", *method_table(by_nfe)]
    atomic_write_text(prun.root / "sweep.md", "\n".join(md) + "\n")

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7.5, 4.5))
    for fam, pts in sorted(curves.items()):
        x = np.array([p["nfe"] for p in pts], float)
        y = np.array([p["solve_rate"] for p in pts])
        lo, hi = np.array([p["ci95"][0] for p in pts]), np.array([p["ci95"][1] for p in pts])
        style = ":" if any(p["uses_ground_truth"] for p in pts) else ("--" if any(p["uses_task_rules"] for p in pts) else "-")
        line, = ax.plot(x, y, style, marker="o", ms=3, label=fam)
        if len(pts) > 1:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.12)
        else:
            ax.errorbar(x, y, yerr=[y - lo, hi - y], color=line.get_color(), capsize=3)
    ax.set_xlabel("network evaluations per instance")
    ax.set_ylabel("solve rate (95% Wilson CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(prun.figure("curve.png", "Solve rate vs compute per method",
                            f"{head}. Dotted: needs ground truth (oracle); dashed: uses task rules. Early screens: K = 3 x budget seeds "
                            f"(at most {k}), screened after {screen_step} steps, as many survivors as fit."), dpi=120)
    pyplot.close(fig)
    summary = {"kind": "search-sweep", "task": task, "size": size, "n": n, "seed": seed, "budgets": list(budgets), "unit_nfe": unit,
               "k": k, "screen_step": screen_step, "precision": precision_of(denoiser), "curves": curves,
               "selection": selection, "selected": selected, "methods": per}
    text = [head, ""]
    for fam, pts in sorted(curves.items()):
        text.append(f"{fam}: " + ", ".join(f"{p['nfe']} NFE {fmt_ci(p['solve_rate'], p['ci95'])}" for p in pts))
    text += ["", f"Best per family and budget: {selection}.", *selection_table(selected)]
    return _finish(prun, summary, "\n".join(text))


__all__ = ["SearchShard", "collect", "curve_points", "default_methods", "evaluate_methods", "load_records", "method_table",
           "run_search", "run_sweep", "sample_trajectories", "screen_latents", "search_shard", "select_per_budget", "selection_table",
           "summarize", "sweep_grid"]
