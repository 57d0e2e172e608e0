"""Comparisons and sweeps: per-method solve rates with CIs, paired differences, tables, plots and a recommendation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, atomic_write_text, to_dict, write_json
from ..precision import precision_of
from ..runner import SamplingConfig
from ..stats import calibration_split, fmt_ci, paired_diff as _paired, proportion_ci, wilson
from .compute import matched_steps, nfe_per_instance
from .merge import RULES
from .methods import Method, sweep_methods
from .shards import evaluate_methods


def paired_diff(ref: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, list[float]] | None:
    """Paired differences (rows minus ref) over the instances both hold: solve rate with Newcombe's interval (and its
    estimate record, exact McNemar), mean score with a Student t interval."""
    by_seed = {r["seed"]: r for r in ref}
    paired = [(by_seed[r["seed"]], r) for r in rows if r["seed"] in by_seed]
    if not paired:
        return None
    a, b = zip(*paired)
    rate = _paired([float(x["success"]) for x in a], [float(x["success"]) for x in b], rates=True)
    return {"solve_rate": list(rate[:3]), "solve_rate_stats": rate[3],
            "mean_score": list(_paired([x["score"] for x in a], [x["score"] for x in b], rates=False)[:3])}


def summarize_methods(results: dict[str, list[dict[str, Any]]], methods: Sequence[Method], sampling: SamplingConfig,
                      baseline: str | None = None, controls: dict[str, Sequence[str]] | None = None) -> dict[str, dict[str, Any]]:
    """Per method: solve rate with Wilson CI, mean score, NFE, and the paired difference (`paired_diff`) to `baseline`
    (and, per method name in `controls`, to each of the control methods listed for it: `diff_vs_<control>`)."""
    base = baseline or ("single" if "single" in results else methods[0].name)
    ref = {r["seed"]: r for r in results[base]}
    out = {}
    for m in methods:
        rs = results[m.name]
        k = sum(bool(r["success"]) for r in rs)
        mean, lo, hi = proportion_ci([r["score"] for r in rs])
        row: dict[str, Any] = {"ens": to_dict(m.ens), "steps": m.sampling(sampling).steps,
                               "nfe": nfe_per_instance(m.ens, m.sampling(sampling)), "n": len(rs), "solved": k,
                               "solve_rate": k / len(rs) if rs else float("nan"), "solve_rate_ci95": list(wilson(k, len(rs))),
                               "mean_score": mean, "mean_score_ci95": [lo, hi], "needs_ground_truth": m.ens.select == "oracle" and m.ens.k > 1}
        spreads = [r["spread"] for r in rs if "spread" in r]
        if spreads:
            row["mean_spread"] = float(np.mean(spreads))
        if m.name != base and (d := paired_diff(list(ref.values()), rs)):
            row["diff_vs_" + base] = d
        for c in (controls or {}).get(m.name, ()):
            if c in results and c != m.name and (d := paired_diff(results[c], rs)):
                row["diff_vs_" + c] = d
        out[m.name] = row
    return out


def _table(summary: dict[str, dict[str, Any]], base: str) -> list[str]:
    lines = [f"{'method':<40} {'nfe':>5} {'solve rate [95% CI]':>24} {'diff vs ' + base + ' [95% CI]':>28}"]
    for name, s in summary.items():
        d = s.get("diff_vs_" + base)
        diff = fmt_ci(d["solve_rate"][0], d["solve_rate"][1:]) if d else "-"
        tag = " (oracle)" if s["needs_ground_truth"] else ""
        lines.append(f"{name + tag:<40} {s['nfe']:>5} {fmt_ci(s['solve_rate'], s['solve_rate_ci95']):>24} {diff:>28}")
    return lines


def _run_config(denoiser: Any, task: str, size: int, n: int, seed: int, sampling: SamplingConfig,
                methods: Sequence[Method], **extra: Any) -> dict[str, Any]:
    return {"model": getattr(denoiser, "name", type(denoiser).__name__), "task": task, "size": size, "n": n, "seed": seed,
            "sampling": to_dict(sampling), "methods": [to_dict(m) for m in methods], "precision": precision_of(denoiser), **extra}


def _held_out(denoiser: Any, model: str | None, task: str, size: int, seed: int, n: int, allow_seen: bool) -> Any:
    """The run's instances, held out by content from the model's seen-set (fixed in the manifest before any shard)."""
    from ..evaluate import evaluation_instances

    spec = model or getattr(denoiser, "name", type(denoiser).__name__)
    return evaluation_instances(denoiser, str(spec), task, size, seed, n, allow_seen=allow_seen)


def _mark_seen(results: dict[str, list[dict[str, Any]]], held: Any) -> None:
    """Flag the results on instances the model trained on (only with allow_seen)."""
    marked = {s for s, m in zip(held.seeds, held.seen) if m}
    for rows in results.values():
        for r in rows:
            if r["seed"] in marked:
                r["seen_in_training"] = True


ENSEMBLE_CONTROLS = ("single_cold", "single_matched")  # a colder start at no cost; one seed with the ensemble's NFE


def compare(denoiser: Any, task: str, size: int, n: int, seed: int, sampling: SamplingConfig, methods: Sequence[Method],
            out: str | Path, *, max_batch: int = 64, progress: bool = True, ray_address: str | None = None,
            num_workers: int | None = None, model: str | None = None, device: str = "auto", allow_seen: bool = False) -> dict[str, Any]:
    """Evaluate `methods` on the same n held-out instances into run folder `out` (resumable; on Ray with `ray_address`).

    Returns: the summary (also in summary.json): per method solve rate + Wilson CI, NFE, and the paired
    paired CI (Newcombe for the solve rate) of the difference to "single" (or the first method).
    """
    from ..probes.common import ProbeRun, plt

    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must be unique, got {names}")
    for m in methods:
        m.ens.check(m.sampling(sampling).steps)
    held = _held_out(denoiser, model, task, size, seed, n, allow_seen)
    run = ProbeRun(out, "ensemble-compare", _run_config(denoiser, task, size, n, seed, sampling, methods), held=held)
    seeds = list(held.seeds)
    results = evaluate_methods(denoiser, run.folder, task, size, seeds, sampling, methods, max_batch=max_batch, progress=progress,
                                ray_address=ray_address, num_workers=num_workers, model=model, device=device)
    _mark_seen(results, held)
    run.folder.write_jsonl("results.jsonl", [r for m in methods for r in results[m.name]])
    per = summarize_methods(results, methods, sampling, controls={"ensemble": ENSEMBLE_CONTROLS})
    base = "single" if "single" in per else names[0]

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7, 0.45 * len(per) + 1.2))
    ys = np.arange(len(per))[::-1]
    rates = [s["solve_rate"] for s in per.values()]
    err = np.array([[r - s["solve_rate_ci95"][0], s["solve_rate_ci95"][1] - r] for r, s in zip(rates, per.values())]).T
    ax.barh(ys, rates, xerr=err, color=["#bbb" if s["needs_ground_truth"] else "#4477aa" for s in per.values()], capsize=3)
    ax.set_yticks(ys, [f"{k} ({s['nfe']} NFE)" for k, s in per.items()], fontsize=8)
    ax.set_xlabel("solve rate (95% Wilson CI)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(run.figure("compare.png", "Ensemble vs test-time baselines",
                           f"Solve rate per method on the same {n} {task} {size}x{size} instances and noises; grey bars need ground "
                           "truth (oracle upper bound). NFE: network evaluations per instance."), dpi=120)
    pyplot.close(fig)
    summary = {"kind": "ensemble-compare", "n": n, "baseline": base, "methods": per}
    text = [f"ensemble compare: {task} {size}x{size}, n={n}, {sampling.sampler} {sampling.steps} steps", *_table(per, base)]
    for c in ENSEMBLE_CONTROLS:
        if (d := per.get("ensemble", {}).get("diff_vs_" + c)) is not None:
            text.append(f"ensemble minus {c} (paired, {per[c]['nfe']} vs {per['ensemble']['nfe']} NFE): solve rate "
                        f"{fmt_ci(d['solve_rate'][0], d['solve_rate'][1:])}")
    return run.finish(summary, "\n".join(text))



def _point(m: Method) -> dict[str, Any]:
    """A sweep point's coordinates; a cold-start control sits at the K whose noise mean it imitates."""
    if m.noise_scale != 1.0 and m.ens.k == 1:
        return {"name": m.name, "k": round(m.noise_scale**-2), "window": None, "rule": "single_cold", "norm_correct": False}
    if m.steps is not None and m.ens.k == 1:
        return {"name": m.name, "k": 1, "window": None, "rule": "single_matched", "norm_correct": False}
    return {"name": m.name, "k": m.ens.k, "window": list(m.ens.window), "rule": m.ens.rule, "norm_correct": m.ens.norm_correct}


def split_results(results: dict[str, list[dict[str, Any]]], seeds: Sequence[int]) -> tuple[dict[str, list[dict[str, Any]]],
                                                                                       dict[str, list[dict[str, Any]]], bool]:
    """Each method's rows on a calibration half and on a held-out half of the instances (stats.calibration_split)."""
    cal, held, split = calibration_split(len(seeds))
    keep = lambda idx: {seeds[i] for i in idx}  # noqa: E731
    part = lambda ss: {m: [r for r in rs if r["seed"] in ss] for m, rs in results.items()}  # noqa: E731
    return part(keep(cal)), part(keep(held)), split


def held_out(rec: dict[str, Any], per_held: dict[str, dict[str, Any]], split: bool, base: str = "single") -> dict[str, Any]:
    """A recommendation chosen on the calibration half, with its numbers on the held-out half (and says so)."""
    if not split:
        return rec | {"selection": "chosen in-sample (fewer than 4 instances)"}
    row = per_held.get(rec["name"], {})
    return rec | {"calibration": {"solve_rate": rec.get("solve_rate"), "diff": rec.get("diff")},
                  "solve_rate": row.get("solve_rate"), "diff": row.get("diff_vs_" + base), "n_held_out": row.get("n"),
                  "held_out_diffs": {k[len("diff_vs_"):]: v for k, v in row.items() if k.startswith("diff_vs_")},
                  "selection": f"chosen on the calibration half (even instances), its numbers from the held-out half "
                               f"(odd instances, n={row.get('n')})"}


def recommend(per: dict[str, dict[str, Any]], base: str = "single") -> dict[str, Any]:
    """The best setting by the data: best paired difference whose CI excludes 0, else the best mean."""
    cands = {k: v for k, v in per.items() if k != base and not v["needs_ground_truth"]}
    if not cands:
        return {"name": base, "reason": "no ensemble settings evaluated"}
    key = lambda kv: (kv[1]["solve_rate"], -kv[1]["nfe"])  # noqa: E731
    sig = {k: v for k, v in cands.items() if v.get("diff_vs_" + base, {}).get("solve_rate", [0, 0, 0])[1] > 0}
    if sig:
        name, row = max(sig.items(), key=lambda kv: (kv[1]["diff_vs_" + base]["solve_rate"][0], -kv[1]["nfe"]))
        reason = f"largest paired improvement over {base} whose 95% CI excludes 0"
    else:
        name, row = max(cands.items(), key=key)
        reason = f"no setting beats {base} with a CI excluding 0; best mean solve rate (not significant)"
    return {"name": name, "ens": row["ens"], "solve_rate": row["solve_rate"], "diff": row.get("diff_vs_" + base), "reason": reason}


def sweep(denoiser: Any, task: str, size: int, n: int, seed: int, sampling: SamplingConfig, out: str | Path, *,
          ks: Sequence[int] = (2, 3, 4, 8), windows: Sequence[tuple[int, int]] = ((0, 1), (0, 2), (0, 4)),
          rules: Sequence[str] = RULES, norm_correct: Sequence[bool] = (False, True), after: str = "single",
          select: str = "first", max_batch: int = 64, progress: bool = True, ray_address: str | None = None,
          num_workers: int | None = None, model: str | None = None, device: str = "auto", matched: bool = True,
          allow_seen: bool = False) -> dict[str, Any]:
    """Sweep K, windows, rules and norm correction against single seed on the same instances.

    after="single" by default: with select="first" it gives the same answer as continuing all K, at
    K*M + (steps - M) instead of K*steps evaluations. Every setting also gets paired differences to its
    controls: the single seed with a colder start (`k{K}_single_cold`) and, with `matched`, one seed with as
    many steps as its NFE allow (`single_nfe{N}`). Writes sweep.json, sweep.md, sweep.png, figures.json,
    summary.json and summary.txt into `out` (resumable).
    """
    from ..probes.common import ProbeRun, plt

    methods = sweep_methods(ks, windows, rules, norm_correct, after=after, select=select)
    merged = [m for m in methods if m.ens.k > 1]
    nfes = sorted({nfe_per_instance(m.ens, sampling) for m in merged} - {nfe_per_instance(methods[0].ens, sampling)}) if matched else []
    methods += [Method(f"single_nfe{v}", steps=matched_steps(v, sampling.sampler)) for v in nfes]
    controls = {}
    for m in merged:
        v = nfe_per_instance(m.ens, sampling)
        controls[m.name] = [f"k{m.ens.k}_single_cold"] + ([f"single_nfe{v}"] if v in nfes else [])
    for m in methods:
        m.ens.check(sampling.steps)
    held = _held_out(denoiser, model, task, size, seed, n, allow_seen)
    run = ProbeRun(out, "ensemble-sweep", _run_config(denoiser, task, size, n, seed, sampling, methods), held=held)
    seeds = list(held.seeds)
    results = evaluate_methods(denoiser, run.folder, task, size, seeds, sampling, methods, max_batch=max_batch, progress=progress,
                                ray_address=ray_address, num_workers=num_workers, model=model, device=device)
    _mark_seen(results, held)
    run.folder.write_jsonl("results.jsonl", [r for m in methods for r in results[m.name]])
    per = summarize_methods(results, methods, sampling, baseline="single", controls=controls)
    # the recommendation is chosen on a calibration half of the instances and its gain reported on the other half
    cal, held, split = split_results(results, seeds)
    per_cal, per_held = (summarize_methods(r, methods, sampling, baseline="single", controls=controls) for r in (cal, held))
    rec = held_out(recommend(per_cal), per_held, split)
    # the cold-start and matched controls are single seeds: the best setting that really merges trajectories, apart
    singles = {m.name for m in methods if m.ens.k == 1 and m.name != "single"}
    rec_ens = rec if rec["name"] not in singles else held_out(recommend({k: v for k, v in per_cal.items() if k not in singles}),
                                                             per_held, split)
    points = [_point(m) | per[m.name] for m in methods[1:]]
    for p in points:  # each setting's controls under fixed keys
        cs = controls.get(p["name"], [])
        p["diff_vs_cold"] = per[p["name"]].get(f"diff_vs_{cs[0]}") if cs else None
        p["diff_vs_matched"] = per[p["name"]].get(f"diff_vs_{cs[1]}") if len(cs) > 1 else None
    write_json(run.root / "sweep.json", {"baseline": per["single"], "points": points, "recommended": rec, "recommended_ensemble": rec_ens})

    md = ["| K | window | rule | norm | NFE | solve rate [95% CI] | diff vs single [95% CI] | diff vs single_cold [95% CI] "
          "| diff vs same-NFE single [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
    s0 = per["single"]
    md.append(f"| 1 | - | single | - | {s0['nfe']} | {fmt_ci(s0['solve_rate'], s0['solve_rate_ci95'])} | - | - | - |")
    for p in points:
        d = p["diff_vs_single"]["solve_rate"]
        star = " **" if p["name"] == rec["name"] else ""
        win = f"{p['window'][0]}:{p['window'][1]}" if p["window"] else "-"
        ctl = [fmt_ci(c["solve_rate"][0], c["solve_rate"][1:]) if c else "-" for c in (p["diff_vs_cold"], p["diff_vs_matched"])]
        md.append(f"| {p['k']} | {win} | {p['rule']} | {'yes' if p['norm_correct'] else 'no'} | {p['nfe']} | "
                  f"{fmt_ci(p['solve_rate'], p['solve_rate_ci95'])} | {fmt_ci(d[0], d[1:])}{star} | {ctl[0]} | {ctl[1]} |")
    md.append(f"\nRecommended: `{rec['name']}` ({rec['reason']}). {rec['selection']}.")
    if rec_ens is not rec:
        md.append(f"Best ensemble (the cold-start controls aside): `{rec_ens['name']}` ({rec_ens['reason']}). {rec_ens['selection']}.")
    atomic_write_text(run.root / "sweep.md", "\n".join(md) + "\n")

    pyplot = plt()
    wins = sorted({tuple(p["window"]) for p in points if p["window"]})
    colds = sorted((p for p in points if p["rule"] == "single_cold"), key=lambda p: p["k"])
    fig, axes = pyplot.subplots(1, len(wins), figsize=(4.2 * len(wins), 3.4), squeeze=False, sharey=True)
    for ax, w in zip(axes[0], wins):
        ax.axhspan(*s0["solve_rate_ci95"], color="#ddd", label="single seed (95% CI)")
        ax.axhline(s0["solve_rate"], color="#888", lw=1)
        for rule in rules:
            for nc in (False, True):
                ps = sorted((p for p in points if p["window"] and tuple(p["window"]) == w and p["rule"] == rule and p["norm_correct"] == nc), key=lambda p: p["k"])
                if not ps:
                    continue
                r = np.array([p["solve_rate"] for p in ps])
                err = np.array([[v - p["solve_rate_ci95"][0], p["solve_rate_ci95"][1] - v] for v, p in zip(r, ps)]).T
                ax.errorbar([p["k"] for p in ps], r, yerr=err, marker="o", capsize=3, label=rule + (" +norm" if nc else ""))
        if colds:
            ax.plot([p["k"] for p in colds], [p["solve_rate"] for p in colds], "k--", marker="x", label="single, noise / sqrt(K)")
        ax.set_title(f"merge window {w[0]}:{w[1]}", fontsize=9)
        ax.set_xlabel("K seeds")
        ax.set_xticks(sorted(set(ks)))
    axes[0][0].set_ylabel("solve rate")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run.figure("sweep.png", "Ensemble sweep: solve rate vs K",
                           f"Solve rate (95% Wilson CI) vs number of seeds K per merge rule, one panel per merge window; grey band: "
                           f"single seed. {n} {task} {size}x{size} instances, {sampling.sampler} {sampling.steps} steps, after={after}."), dpi=120)
    pyplot.close(fig)
    summary = {"kind": "ensemble-sweep", "n": n, "baseline": "single", "single": s0, "recommended": rec, "recommended_ensemble": rec_ens,
               "n_settings": len(points)}
    text = [f"ensemble sweep: {task} {size}x{size}, n={n}, {sampling.sampler} {sampling.steps} steps, {len(points)} settings",
            f"single seed: {fmt_ci(s0['solve_rate'], s0['solve_rate_ci95'])}",
            f"recommended: {rec['name']}: {rec['reason']}; {rec['selection']}"]
    shown = [rec] if rec_ens is rec else [rec, rec_ens]
    for i, r in enumerate(shown):
        if i:
            text.append(f"best ensemble (cold-start controls aside): {r['name']}: {r['reason']}; {r['selection']}")
        if r.get("diff"):
            text.append(f"  solve rate {r['solve_rate']:.3f}, diff vs single {fmt_ci(r['diff']['solve_rate'][0], r['diff']['solve_rate'][1:])}")
        # its controls, like its gain, on the held-out half when it was chosen on the other half
        held_diffs, where = r.get("held_out_diffs"), " (held-out half)" if "held_out_diffs" in r else ""
        for c, label in zip(controls.get(r["name"], []), ("single_cold", "a single seed with the same NFE")):
            d = held_diffs.get(c) if held_diffs is not None else per[r["name"]].get(f"diff_vs_{c}")
            if d:
                text.append(f"  diff vs {label}{where}: {fmt_ci(d['solve_rate'][0], d['solve_rate'][1:])}")
    return run.finish(summary, "\n".join(text))

