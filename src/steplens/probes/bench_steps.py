"""Chain-of-Steps on official VBVR-Bench tasks: the decoded x0_hat of chosen steps, scored like final videos.

On an official task there is no per-step rule of steplens' own, only a scorer of finished videos (the
official kit, or steplens' scorer where it covers the task). So each sample is generated once (seed
`BenchConfig.seed`, no intervention), the clean estimate x0_hat of each chosen step is decoded to a
video and written as if it were a method's output: `OUT/step_SS/<split>/<task>/<i:05d>.mp4`. Every
step root is then scored by the same scorers as a final video (`vbvr.run.score_bench`), with the
paired difference of each step to the last step (whose x0_hat is the sampler's final output).

The reading: the step from which the score no longer differs from the final one (`settles_at`, the
first step whose paired CI with the final includes 0 and stays so), and early (the first quarter of
the steps) minus final with its CI: an answer that forms along the steps scores below the final early
on (the paper's Chain-of-Steps); one that scores like the final from the first step is fixed at the
start. The scorer judges a finished video, so a low early score also counts blur against the answer:
say so beside the number (`caveat`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, atomic_write_text, read_jsonl, write_json

CAVEAT = ("scored the decoded x0_hat of each step with a scorer of finished videos: an early x0_hat is blurry, and the scorer "
          "counts blur against it as well as a wrong answer")


def chosen_steps(n_steps: int, every: int) -> list[int]:
    """0, every, 2*every, ... and always the last step."""
    if every < 1:
        raise ConfigError(f"every must be >= 1, got {every}")
    return sorted({*range(0, n_steps, every), n_steps - 1})


def root_name(step: int) -> str:
    return f"step_{step:02d}"


def step_generators(steps: Sequence[int], sampling: Any) -> dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]]:
    """One vbvr.run.SampleGenerator per step; they share one trajectory per sample (sampled on the first call for it)."""
    import torch

    from ..sampling import get_sampler, run, seeded_noise

    wanted = set(steps)
    if max(wanted) >= sampling.steps or min(wanted) < 0:
        raise ConfigError(f"steps must lie in 0..{sampling.steps - 1}, got {sorted(wanted)}")
    cache: dict[str, Any] = {}

    def videos(den: Any, inp: Any) -> dict[int, np.ndarray]:
        if cache.get("key") != inp.ref.key:
            cache.clear()
            x0: dict[int, torch.Tensor] = {}

            def keep(e: Any) -> None:
                if e.step in wanted:
                    x0[e.step] = e.x0_hat.detach().clone()

            x = seeded_noise(inp.latent_shape, [inp.seed], device=den.device)
            with torch.no_grad():
                run(get_sampler(sampling.sampler)(den, x, sampling.sigmas(den).to(den.device), inp.cond), keep)
                cache["videos"] = {s: den.decode(x0[s].float())[0] for s in sorted(x0)}
            cache["key"] = inp.ref.key
        return cache["videos"]

    def make(step: int) -> Callable[..., tuple[np.ndarray, dict[str, Any]]]:
        def generate(den: Any, inp: Any) -> tuple[np.ndarray, dict[str, Any]]:
            return videos(den, inp)[step], {"step": step, "seeds": [inp.seed], "nfe": sampling.steps, "steps": sampling.steps}

        return generate

    return {root_name(s): make(s) for s in sorted(wanted)}


def settles_at(steps: Sequence[int], diffs: Sequence[Sequence[float] | None]) -> int | None:
    """The first step from which every paired CI (vs the final) includes 0 (`diffs[-1]` is None: the final step itself)."""
    at = None
    for s, d in zip(steps, diffs):
        ok = d is None or d[1] <= 0.0 <= d[2]
        at = (s if at is None else at) if ok else None
    return at


def step_curves(summary: dict[str, Any], steps: Sequence[int], sigmas: Sequence[float],
                rows_by: dict[tuple[str, str], list[float]]) -> dict[str, Any]:
    """Per scorer: the score [CI] of each step, its paired difference to the final step, settles_at, early minus final.

    `summary`: score_bench's, over the step roots; `rows_by[(root, scorer key)]`: the covered samples' scores, one order."""
    from ..stats import bootstrap_diff

    last = root_name(steps[-1])
    out: dict[str, Any] = {}
    for key in summary["methods"].get(last, {}):
        rows, diffs = [], []
        for s in steps:
            m = summary["methods"][root_name(s)][key]
            d = m.get("diff_vs_" + last, {}).get("score") if s != steps[-1] else None
            diffs.append(d)
            rows.append({"step": s, "sigma": float(sigmas[s]), "score": m["overall"]["score"], "ci95": m["overall"]["ci95"],
                         "n": m["overall"]["n"], "diff_vs_final": d})
        if rows[-1]["score"] is None:
            out[key] = {"steps": rows, "note": "the scorer covers none of these samples"}
            continue
        quarter = [r for r in rows if r["step"] < max(1, (len(sigmas) - 1) // 4)]  # sigmas: steps + 1 values
        early = None
        if quarter:
            per_step = {s: rows_by.get((root_name(s), key), []) for s in [r["step"] for r in quarter] + [steps[-1]]}
            fin = per_step.pop(steps[-1])
            if fin and all(len(v) == len(fin) for v in per_step.values()):
                e = np.mean([v for v in per_step.values()], axis=0).tolist()
                early = list(bootstrap_diff(fin, e))
        out[key] = {"steps": rows, "settles_at": settles_at(steps, diffs), "early_minus_final": early,
                    "early_steps": [r["step"] for r in quarter], "convention": summary["methods"][last][key]["scorer"]["convention"]}
    return out


def run_bench_steps(den: Any, cfg: Any, out: str | Path, sampling: Any, scorers: Sequence[Any], *, every: int,
                    manifest: dict[str, Any] | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate the chosen steps' x0_hat videos of every sample (resumable), score every step root, summarise the curve.

    Writes OUT/steps.json (the curves), OUT/steps.txt and OUT/steps.png beside score_bench's files; returns the curves.
    """
    from ..config import to_dict
    from ..vbvr.run import run_bench, score_bench

    steps = chosen_steps(sampling.steps, every)
    gens = step_generators(steps, sampling)
    extra = {"sampling": to_dict(sampling), "probe": "cos", "steps_scored": steps, **(manifest or {})}
    refs = run_bench(den, cfg, out, gens, kind="probe-cos-vbvr-bench", manifest=extra, echo=echo)
    names = list(gens)
    summary = score_bench(out, cfg.data, refs, names, scorers, baseline=names[-1])
    sigmas = [float(v) for v in sampling.sigmas(den)]
    curves = step_curves(summary, steps, sigmas, _score_rows(Path(out), names, scorers))
    result = {"kind": "probe-cos-vbvr-bench", "data": cfg.data, "n_samples": len(refs), "steps": steps, "seed": cfg.seed,
              "caveat": CAVEAT, "scorers": curves, "n_roots": len(names), "generation_errors": summary["generation_errors"]}
    write_json(Path(out) / "steps.json", result)
    text = "\n".join(steps_lines(result)) + "\n"
    atomic_write_text(Path(out) / "steps.txt", text)
    _plot(Path(out) / "steps.png", result)
    return result


def _score_rows(out: Path, names: Sequence[str], scorers: Sequence[Any]) -> dict[tuple[str, str], list[float]]:
    """Per (step root, scorer key): the covered samples' scores in one order (for paired early-vs-final)."""
    rows = {}
    for n in names:
        for sc in scorers:
            p = out / "scores" / f"{n}.{sc.key}.jsonl"
            recs = read_jsonl(p) if p.is_file() else []
            recs = sorted((r for r in recs if r.get("status") != "not_covered"), key=lambda r: (r["split"], r["task"], r["index"]))
            rows[(n, sc.key)] = [float(r["score"]) for r in recs]
    return rows


def steps_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"Chain-of-Steps on {result['n_samples']} VBVR-Bench samples of {result['data']} (seed {result['seed']}): "
             f"{result['caveat']}."]
    for key, c in result["scorers"].items():
        if "note" in c:
            lines.append(f"{key}: {c['note']}")
            continue
        lines.append(f"{key} ({c['convention']}):")
        for r in c["steps"]:
            d = r["diff_vs_final"]
            dtxt = f"  vs final {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else "  (final)"
            lines.append(f"  step {r['step']:>3} sigma {r['sigma']:.3f}: {r['score']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                         f"n={r['n']}{dtxt}")
        e = c["early_minus_final"]
        etxt = f"{e[0]:+.3f} [{e[1]:+.3f}, {e[2]:+.3f}]" if e else "not measured (no step in the first quarter)"
        settle = "the final step only" if c["settles_at"] == result["steps"][-1] else f"step {c['settles_at']}"
        lines.append(f"  early (steps {c['early_steps']}) minus final: {etxt}; scores like the final from {settle}")
    return lines


def _plot(path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, c in result["scorers"].items():
        pts = [r for r in c["steps"] if r["score"] is not None]
        if not pts:
            continue
        x = [r["step"] for r in pts]
        ax.plot(x, [r["score"] for r in pts], marker="o", label=key)
        ax.fill_between(x, [r["ci95"][0] for r in pts], [r["ci95"][1] for r in pts], alpha=0.2)
    ax.set_xlabel("step whose x0_hat is scored")
    ax.set_ylabel("score (95% CI)")
    ax.set_title("Score of each step's clean estimate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["CAVEAT", "chosen_steps", "root_name", "run_bench_steps", "settles_at", "step_curves", "step_generators", "steps_lines"]
