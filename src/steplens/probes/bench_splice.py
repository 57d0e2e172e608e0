"""When is the answer decided, on official VBVR-Bench tasks: the splice probe with a benchmark scorer reading the answers.

On an official task steplens has no rule of its own to read an answer off a video, only a scorer of finished videos (the
official kit, or steplens' scorer where it covers the task). So the answer of a final video is its score under that one
scorer, and two finals differ when their scores differ by at least `margin`.

Phase 1 (`OUT/seeds`): K trajectories per sample from seeds seed, seed+1, ..., seed+K-1 (`BenchConfig.seed`, the latent
ensemble's convention), each final written as a method root `seed_J` and scored (`vbvr.run.score_bench`). Per sample the
pair (A, B) of seeds whose scores differ most (by at least `margin`) is spliced; samples where no pair differs are counted.

Phase 2 (`OUT/splices`, only the samples with a pair): A's and B's trajectories are sampled again, one at a time as in phase
1, caching x_s and x0_hat_s at the splice grid. At each splice step s the forward splice (A's noise, B's plan; root `fwd_SS`)
and the reverse (B's noise, A's plan; root `rev_SS`) continue to the end with the formula of `probes.splice`,

    x_s' = (1 - sigma_s) x0_hat_s^plan + sigma_s eps_noise,   eps_noise = (x_s^noise - (1 - sigma_s) x0_hat_s^noise) / sigma_s,

and are written and scored. The outcome of a spliced final with score x, whose noise donor scored n and plan donor p
(|n - p| >= margin): "noise" when |x - n| < |n - p| / 2, "plan" when |x - p| < |n - p| / 2, else "neither" (the midpoint,
or past either score by more than half the gap). The reading is `probes.splice.analyse` over these records (the
follow-plan rate per splice step with Wilson CIs, its 50% crossing with a bootstrap CI over samples, the reverse splice,
split by whether the plan donor scored higher or lower). A scorer of finished videos gives no per-step answer, so there is
no observational commit step here: `probe cos --data` scores each step's x0_hat instead.

Both phases resume (`run_bench`). Phase 2's recomputed A and B finals are compared with phase 1's frames (sha256): on a
deterministic backend they are the same, and the summary counts the samples where they are not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, read_jsonl
from .splice import BENCH_KIND, analyse, continue_from, plot_curves, splice_grid, splice_latent, summary_lines

KIND = BENCH_KIND
SEEDS, SPLICES = "seeds", "splices"  # the two phases' run folders under OUT
DEFAULT_MARGIN = 0.05
ANSWER = ("a final's answer is its score under {scorer}; two finals differ when their scores differ by at least {margin:g}; "
          "a spliced final follows the noise (plan) donor when its score lies within half the donors' gap of that donor's, "
          "else neither")


def seed_root(j: int) -> str:
    return f"seed_{j}"


def splice_root(kind: str, step: int) -> str:
    return f"{'fwd' if kind == 'forward' else 'rev'}_{step:02d}"


def _trajectory(den: Any, inp: Any, sampling: Any, seed: int, grid: set[int] = frozenset()) -> tuple[Any, dict[int, tuple]]:
    """One trajectory (batch 1, seed `seed`): its final latents and (x_s, x0_hat_s, sigma_s) at the steps in `grid`."""
    import torch

    from ..sampling import get_sampler, run, seeded_noise
    from .common import require_finite

    states: dict[int, tuple] = {}

    def keep(e: Any) -> None:
        if e.step in grid:
            states[e.step] = (e.x.detach().clone(), e.x0_hat.detach().clone(), float(e.sigma))

    x = seeded_noise(inp.latent_shape, [seed], device=den.device)
    with torch.no_grad():
        final = run(get_sampler(sampling.sampler)(den, x, sampling.sigmas(den).to(den.device), inp.cond), keep)
    require_finite(final)
    return final, states


def seed_generators(k: int, sampling: Any) -> dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]]:
    """Phase 1: one vbvr.run.SampleGenerator per seed j (noise seed BenchConfig.seed + j), each a plain trajectory."""
    def make(j: int) -> Callable[..., tuple[np.ndarray, dict[str, Any]]]:
        def generate(den: Any, inp: Any) -> tuple[np.ndarray, dict[str, Any]]:
            final, _ = _trajectory(den, inp, sampling, inp.seed + j)
            return den.decode(final)[0], {"seeds": [inp.seed + j], "nfe": sampling.steps, "steps": sampling.steps}

        return generate

    return {seed_root(j): make(j) for j in range(k)}


def splice_generators(pairs: Mapping[str, Sequence[int]], grid: Sequence[int],
                      sampling: Any) -> dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]]:
    """Phase 2: per splice step, a forward and a reverse SampleGenerator. `pairs[ref.key]`: (A, B) as seed offsets.

    They share A's and B's recomputed trajectories per sample (sampled on the first call for it, cached at the grid)."""
    import torch

    from ..vbvr.run import frames_digest

    cache: dict[str, Any] = {}
    wanted = set(grid)

    def state(den: Any, inp: Any) -> dict[str, Any]:
        if cache.get("key") != inp.ref.key:
            cache.clear()
            a, b = pairs[inp.ref.key]
            runs = {j: _trajectory(den, inp, sampling, inp.seed + j, wanted) for j in (a, b)}
            cache.update(key=inp.ref.key, a=a, b=b, states={j: s for j, (_, s) in runs.items()},
                         finals_sha256=[frames_digest(den.decode(runs[j][0])[0]) for j in (a, b)])
        return cache

    def make(kind: str, s: int) -> Callable[..., tuple[np.ndarray, dict[str, Any]]]:
        def generate(den: Any, inp: Any) -> tuple[np.ndarray, dict[str, Any]]:
            c = state(den, inp)
            noise, plan = (c["a"], c["b"]) if kind == "forward" else (c["b"], c["a"])
            x, x0_noise, sigma = c["states"][noise][s]
            with torch.no_grad():
                out = continue_from(den, sampling, splice_latent(x, x0_noise, c["states"][plan][s][1], sigma), inp.cond, s)
            return den.decode(out)[0], {"splice": kind, "step": s, "noise_seed": inp.seed + noise, "plan_seed": inp.seed + plan,
                                        "donor_finals_sha256": c["finals_sha256"], "steps": sampling.steps,
                                        # this root's continuation; A's and B's recomputation (2 x steps) is shared by every root
                                        "nfe": sampling.steps - s, "nfe_shared_per_sample": 2 * sampling.steps}

        return generate

    return {splice_root(kind, s): make(kind, s) for s in grid for kind in ("forward", "reverse")}


def choose_pair(scores: Sequence[float | None], margin: float) -> tuple[tuple[int, int] | None, int, int]:
    """(the pair of seeds whose scores differ most, by at least `margin`, or None; n pairs differing; n agreeing).

    Seeds without a score (missing video, scorer error) take part in no pair. Ties: the first pair in seed order."""
    ok = [j for j, v in enumerate(scores) if v is not None]
    gaps = [(abs(scores[a] - scores[b]), a, b) for i, a in enumerate(ok) for b in ok[i + 1:]]
    differ = [(g, a, b) for g, a, b in gaps if g >= margin]
    best = max(differ, key=lambda t: (t[0], -t[1], -t[2]), default=None)
    return (None if best is None else (best[1], best[2])), len(differ), len(gaps) - len(differ)


def outcome(score: float, noise: float, plan: float) -> str:
    """Whose answer a spliced final gives, read off scores: within half the donors' gap of the noise donor's score, of the
    plan donor's, or neither."""
    half = abs(noise - plan) / 2
    return "noise" if abs(score - noise) < half else "plan" if abs(score - plan) < half else "neither"


def _scores(out: Path, root: str, key: str, refs: Sequence[Any]) -> dict[str, float | None]:
    """ref.key -> score of one root under one scorer, for each of `refs` (None: missing, error or not covered)."""
    p = out / "scores" / f"{root}.{key}.jsonl"
    got = {(r["split"], r["task"], r["index"]): r for r in (read_jsonl(p) if p.is_file() else [])}
    rows = {ref.key: got.get((ref.split, ref.task, ref.index)) for ref in refs}
    return {k: (float(r["score"]) if r and r["status"] == "scored" else None) for k, r in rows.items()}


def _record(folder: Path, root: str, ref: Any) -> dict[str, Any]:
    """A generated sample's record (`run_bench`'s samples/<method>__<sample>.json), {} when there is none."""
    import json

    from ..vbvr.run import sample_key

    p = folder / "samples" / f"{sample_key(root, ref)}.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def run_bench_splice(den: Any, cfg: Any, out: str | Path, sampling: Any, scorer: Any, *, k: int = 8, every: int = 2,
                     margin: float = DEFAULT_MARGIN, manifest: dict[str, Any] | None = None,
                     echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Both phases into `out` (resumable), the reading as `OUT/summary.json`, `summary.txt`, `splice_curve.png` and the
    per-sample records `OUT/records.jsonl`. `scorer`: the one scorer whose score is a final's answer."""
    from ..config import atomic_write_text, to_dict, to_json
    from ..vbvr.run import run_bench, score_bench
    from .common import ProbeRun

    if k < 2:
        raise ConfigError(f"--k must be >= 2 (pairs of seeds), got {k}")
    if not margin > 0:
        raise ConfigError(f"--margin must be > 0 (two finals differ when their scores differ by at least it), got {margin}")
    grid = splice_grid(sampling.steps, every)
    out = Path(out)
    conf = {"data": str(cfg.data), "bench": to_dict(cfg), "sampling": to_dict(sampling), "k": k, "every": every, "margin": margin,
            "scorer": scorer.key, **(manifest or {})}
    run_ = ProbeRun(out, KIND, conf)
    seeds = seed_generators(k, sampling)
    refs = run_bench(den, cfg, out / SEEDS, seeds, kind=f"{KIND}-seeds", manifest={"sampling": to_dict(sampling), **(manifest or {})},
                     echo=echo)
    score_bench(out / SEEDS, cfg.data, refs, list(seeds), [scorer], baseline=None)
    by_seed = [_scores(out / SEEDS, seed_root(j), scorer.key, refs) for j in range(k)]
    recs, pairs, not_covered = [], {}, []
    for ref in refs:
        sc = [s.get(ref.key) for s in by_seed]
        if all(v is None for v in sc):
            not_covered.append(ref.rel)  # not scored at all (the scorer does not cover the task, or every seed failed)
            continue
        pair, n_differ, n_agree = choose_pair(sc, margin)
        recs.append({"ref": ref.rel, "key": ref.key, "final_score": sc,
                     "n_differ": n_differ, "n_agree": n_agree, "pairs": [list(pair)] if pair else [], "forward": [], "reverse": []})
        if pair:
            pairs[ref.key] = list(pair)
    with_pair = [r for r in refs if r.key in pairs]
    echo(f"{len(with_pair)} of {len(refs)} samples have two seeds whose {scorer.key} scores differ by at least {margin:g}")
    errors: list[str] = []
    if with_pair:
        gens = splice_generators(pairs, grid, sampling)
        run_bench(den, cfg, out / SPLICES, gens, kind=f"{KIND}-splices", refs=with_pair, echo=echo,
                  manifest={"sampling": to_dict(sampling), "grid": grid, "pairs": pairs, "scorer": scorer.key, **(manifest or {})})
        score_bench(out / SPLICES, cfg.data, with_pair, list(gens), [scorer], baseline=None)
        spliced = {name: _scores(out / SPLICES, name, scorer.key, with_pair) for name in gens}
        errors = _read_outcomes(recs, {r.key: r for r in with_pair}, spliced, grid, out)
    ok = [r for r in recs if "error" not in r]
    sigmas = [float(v) for v in sampling.sigmas(den)]
    summary = analyse(ok, grid, sigmas) | {
        "data": str(cfg.data), "k": k, "margin": margin, "scorer": scorer.describe(), "answer": ANSWER.format(scorer=scorer.key, margin=margin),
        "not_covered": not_covered, "n_errors": len(errors), "errors": errors,
        "donor_finals_reproduced": _reproduced(ok)}
    atomic_write_text(out / "records.jsonl", "".join(to_json(r) + "\n" for r in recs))
    if "curve" in summary:
        plot_curves(run_, [(f"{Path(str(cfg.data)).name} ({scorer.key})", summary)])
    return run_.finish(summary, "\n".join(bench_lines(summary, sampling)))


def _read_outcomes(recs: list[dict[str, Any]], refs: Mapping[str, Any], spliced: Mapping[str, Mapping[str, float | None]],
                   grid: Sequence[int], out: Path) -> list[str]:
    """Fill each record's forward and reverse outcomes from the spliced finals' scores; a record with an unscored splice
    gets `error` (left out of the reading) and its message is returned."""
    errors = []
    for r in recs:
        if not r["pairs"]:
            continue
        a, b = r["pairs"][0]
        donors = {"forward": (r["final_score"][a], r["final_score"][b]), "reverse": (r["final_score"][b], r["final_score"][a])}
        scores = {kind: [spliced[splice_root(kind, s)].get(r["key"]) for s in grid] for kind in donors}
        missing = [splice_root(kind, s) for kind in donors for s, x in zip(grid, scores[kind]) if x is None]
        if missing:
            r["error"] = f"{r['ref']}: no score for the spliced finals {', '.join(missing)}"
            errors.append(r["error"])
            continue
        for kind, (noise, plan) in donors.items():  # (noise donor's score, plan donor's score)
            r[kind] = [[outcome(x, noise, plan) for x in scores[kind]]]
        r["spliced_scores"] = scores
        ref = refs[r["key"]]
        again = _record(out / SPLICES, splice_root("forward", grid[0]), ref).get("donor_finals_sha256")
        first = [_record(out / SEEDS, seed_root(j), ref).get("frames_sha256") for j in (a, b)]
        r["donor_finals_reproduced"] = again is not None and again == first
    return errors


def _reproduced(recs: Sequence[dict[str, Any]]) -> dict[str, int]:
    with_pair = [r for r in recs if r["pairs"]]
    return {"n": len(with_pair), "same_frames": sum(bool(r.get("donor_finals_reproduced")) for r in with_pair)}


def bench_lines(s: dict[str, Any], sampling: Any) -> list[str]:
    """The text summary of a --data splice run."""
    head = (f"Splice on {s['n_instances']} VBVR-Bench samples of {s['data']}, K={s['k']} seeds each, {sampling.steps} "
            f"{sampling.sampler} steps, splice steps {s['grid']}; {s['answer']}.")
    t = summary_lines(head, s)
    if s["not_covered"]:
        t.append(f"{len(s['not_covered'])} samples left out, no seed of theirs scored (a task the scorer does not cover, or "
                 f"failed generations), first: {s['not_covered'][0]}")
    rep = s["donor_finals_reproduced"]
    if rep["n"]:
        t.append(f"A's and B's recomputed finals match their first run's frames on {rep['same_frames']}/{rep['n']} samples")
    if s["n_errors"]:
        t.append(f"{s['n_errors']} samples left out for a splice without a score, first: {s['errors'][0]}")
    return t


__all__ = ["DEFAULT_MARGIN", "KIND", "bench_lines", "choose_pair", "outcome", "run_bench_splice", "seed_generators", "splice_generators"]
