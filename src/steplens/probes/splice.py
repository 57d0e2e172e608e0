# long module: the splice, its controls and its reading share one set of step and pair conventions, kept together
"""When is the answer decided? A causal commitment curve by splicing plans between trajectories.

Per instance, K seeds are sampled once (trajectory j starts from `noise_seed(seed, j)`), caching the
latent x_s and the clean estimate x0_hat_s at every splice step s of the grid. Pairs (A, B) whose final
answers differ are taken (the answer: the task's classified block colours of the last frame; pairs
whose answers agree are skipped and counted). At each splice step s, with flow matching
`x_s = (1 - sigma_s) x0 + sigma_s eps` (`models.protocol`), A's noise component is recovered from its
own state and clean estimate,

    eps_A = (x_s^A - (1 - sigma_s) x0_hat_s^A) / sigma_s          (= eps_from_velocity(x_s^A, sigma_s, v_A))
    x_s'  = (1 - sigma_s) x0_hat_s^B + sigma_s eps_A               (= noise_to(x0_hat_s^B, eps_A, sigma_s))

and sampling continues from x_s' at step s (the sampler started mid-way, `first_step=s`). The final
answer is scored against A's (the noise donor) and B's (the plan donor): "noise", "plan" or "neither".
Controls beside it: the reverse splice (B's noise, A's plan) and, optionally, A spliced into A, which
reproduces A's final (x_s' = x_s up to rounding). At step 0 (sigma = 1) the plan has weight 0, so every
splice there follows the noise by construction. The partial splice (`erase`): A's own clean estimate with its
largest drawn wrong candidate painted back to the true video's colours (a maze: its largest lit dead-end branch, painted
floor; another task: the largest group of blocks drawn in a colour the true final frame does not have there), A's noise
kept: is the candidate re-drawn?

The reading (pure, `analyse`): the follow-plan rate per splice step (Wilson 95% CI over pairs), the
step where it crosses 50% from below for the last time (linear interpolation between grid steps; a
percentile bootstrap CI resampling instances), and the observational commit step (the first step from
which the decoded answer of x0_hat never changes, `metrics.commit_step`) of the same trajectories,
compared paired per instance with each pair's causal switch step (the first grid step from which every
later splice follows the plan). Before the crossing the outcome follows the noise (the model still
decides); after it, the plan (the answer is committed). The CI's bounds are widened to the grid's steps; the
bounds before widening are kept, and a CI that only the widening makes wide says so. With `erase`: the
re-draw rate per step of candidates A keeps and of those A prunes, and the step from which erasing a kept
candidate sticks (the same crossing, of its not-re-drawn rate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..models.protocol import eps_from_velocity, noise_to, velocity_from_x0
from ..runner import Batch, _to, noise_seed
from ..runs import RunFolder
from ..sampling import get_sampler, run, seeded_noise
from ..stats import bootstrap_diff, wilson
from ..tasks.base import Task, classify_blocks
from ..tasks import get_task
from ..tasks.maze import PATH, MazeInstance, floor_mask, solution_mask
from .common import ProbeConfig, ProbeRun, held_out, plt, require_finite, run_sharded, split_errors
from .metrics import LIT, blueness, commit_step, components

OUTCOMES = ("noise", "plan", "neither")
BENCH_KIND = "probe-splice-vbvr-bench"  # the run kind of probe splice --data (probes.bench_splice)
SEEDS_AGREE = "not measurable: the seeds agree"
NEVER_PLAN = "not measurable: the follow-plan rate stays below 50% at every splice step (the noise decides to the end)"
FORMULA = ("eps_A = (x_s^A - (1 - sigma_s) x0_hat_s^A) / sigma_s; x_s' = (1 - sigma_s) x0_hat_s^B + sigma_s eps_A; "
           "sampling continues from x_s' at step s")


def splice_grid(steps: int, every: int) -> list[int]:
    """Splice steps 0, every, 2 every, ... below `steps` (step s splices the latent step s starts from)."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    return list(range(0, steps, every))


def splice_latent(x: Tensor, x0_noise: Tensor, x0_plan: Tensor, sigma: float) -> Tensor:
    """The state at `sigma` with the noise component of (x, x0_noise) and the clean estimate `x0_plan`."""
    eps = eps_from_velocity(x, sigma, velocity_from_x0(x, sigma, x0_noise))  # = (x - (1 - sigma) x0_noise) / sigma
    return noise_to(x0_plan, eps, sigma)


def answers(task: Task, insts: Sequence[Any], frames: np.ndarray) -> list[np.ndarray]:
    """Each video's answer: the classified block colours (Hb, Wb) of its last frame."""
    return [classify_blocks(task.video_blocks(i, f)[-1], task.colors) for i, f in zip(insts, frames)]


def choose_pairs(ans: Sequence[np.ndarray], max_pairs: int) -> tuple[list[tuple[int, int]], int, int]:
    """(pairs, n differing, n agreeing) among K answers: seeds used at most once first, in seed order, up to `max_pairs`."""
    k = len(ans)
    differ = [(a, b) for a in range(k) for b in range(a + 1, k) if not np.array_equal(ans[a], ans[b])]
    n_agree = k * (k - 1) // 2 - len(differ)
    used: set[int] = set()
    first, rest = [], []
    for a, b in differ:
        (first if a not in used and b not in used else rest).append((a, b))
        if a not in used and b not in used:
            used |= {a, b}
    return (first + rest)[:max_pairs], len(differ), n_agree


class _Cache:
    """x_s and x0_hat_s at the grid steps, and the decoded answer of x0_hat at every step."""

    def __init__(self, den: Any, task: Task, insts: list[Any], grid: Sequence[int]):
        self.den, self.task, self.insts, self.grid = den, task, insts, set(grid)
        self.x: dict[int, Tensor] = {}
        self.x0: dict[int, Tensor] = {}
        self.sigma: dict[int, float] = {}
        self.answers: list[list[np.ndarray]] = []  # per step, per sample

    def __call__(self, e) -> None:
        if e.step in self.grid:
            self.x[e.step], self.x0[e.step], self.sigma[e.step] = e.x.detach(), e.x0_hat.detach(), e.sigma
        self.answers.append(answers(self.task, self.insts, self.den.decode(e.x0_hat)))


def dead_end_branch(inst: Any, last: np.ndarray) -> np.ndarray | None:
    """The largest dead-end branch a maze frame (Hb, Wb, 3) lights: off-path floor blocks of path colour >= LIT, 4-connected."""
    off = floor_mask(inst) & ~solution_mask(inst)
    off[inst.start] = off[inst.goal] = False
    groups = components((blueness(last) >= LIT) & off)
    return max(groups, key=lambda g: int(g.sum())) if groups else None


def wrong_candidate(task: Task, inst: Any, last: np.ndarray, truth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The candidate a last frame (Hb, Wb, 3) of x0_hat draws that the answer does not use: (mask, colour index per block).

    Maze: the largest lit dead-end branch (`dead_end_branch`), in path colour. Any other task with a background colour:
    the largest 4-connected group of blocks classified as a colour other than the background that the true final frame
    does not have there (occlusion: the object drawn short of, inside or past its exit; rotate: blue blocks off the
    rotated piece). None when there is none. `truth`: the instance's true video (`task.blocks`), when the caller has it."""
    if isinstance(inst, MazeInstance):
        m = dead_end_branch(inst, last)
        return None if m is None else (m, np.full(m.shape, task.colors.index(PATH)))
    if task.background is None:
        raise ValueError(f"--erase needs a task with a background colour; {task.name} has none")
    cls = classify_blocks(np.asarray(last, dtype=np.float32), task.colors)
    want = classify_blocks((task.blocks(inst) if truth is None else truth)[-1].astype(np.float32), task.colors)
    groups = components((cls >= 0) & (cls != task.colors.index(task.background)) & (cls != want))
    return (max(groups, key=lambda g: int(g.sum())), cls) if groups else None


def erase_blocks(den: Any, x0: Tensor, masks: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> Tensor:
    """x0_hat (B, C, F, H, W) with each sample's masked blocks painted the true video's colours (`truths`, (T, Hb, Wb, 3))
    in every frame after the given first one (a maze's off-path floor: floor).

    The edit is made on the decoded block video and added as the difference of its encodings (exact for a linear codec)."""
    video = den.decode(x0)  # (B, T, Hb, Wb, 3) uint8
    if video.shape[1:4] != truths[0].shape[:3]:
        raise ValueError("--erase edits blocks in latent space: it needs a model whose latents are the task's block grid")
    edited = video.copy()
    for v, m, t in zip(edited, masks, truths):
        v[1:, m] = t[1:, m]
    return x0 + (den.encode(edited) - den.encode(video)).to(x0)


def _erase(den: Any, cfg: ProbeConfig, cache: _Cache, cond: Any, recs: list[dict[str, Any]], k: int, grid: Sequence[int],
           fin: list[np.ndarray], tick: Callable[[int], None]) -> None:
    """The partial splice: per pair, A's clean estimate at s with its largest drawn wrong candidate erased, A's noise kept.

    Per pair and grid step: None (A draws no wrong candidate there), else {redrawn: the final draws the erased colour on
    an erased block, in_final: A's own final does, same: the final answer is A's}."""
    task, insts = cache.task, cache.insts
    rows = [(i, p, i * k + a) for i, r in enumerate(recs) for p, (a, _) in enumerate(r["pairs"])]
    for r in recs:
        r["erase"] = [[] for _ in r["pairs"]]
    truths = [task.blocks(insts[n]) for _, _, n in rows]  # each A's true video (runs the solver): once, not per step
    for s in grid:
        x0 = cache.x0[s][torch.tensor([n for _, _, n in rows], device=cache.x0[s].device)]
        lasts = [task.video_blocks(insts[n], v)[-1] for (_, _, n), v in zip(rows, den.decode(x0))]
        found = [wrong_candidate(task, insts[n], last, t) for (_, _, n), last, t in zip(rows, lasts, truths)]
        todo = [j for j, c in enumerate(found) if c is not None]
        got: dict[int, dict[str, bool]] = {}
        if todo:
            idx = torch.tensor([rows[j][2] for j in todo], device=x0.device)
            plan = erase_blocks(den, x0[todo], [found[j][0] for j in todo], [truths[j] for j in todo])
            out = continue_from(den, cfg.sampling, splice_latent(cache.x[s][idx], cache.x0[s][idx], plan, cache.sigma[s]), cond.index(idx), s)
            for j, a in zip(todo, answers(task, [insts[rows[j][2]] for j in todo], den.decode(out))):
                (m, col), n = found[j], rows[j][2]
                got[j] = {"redrawn": bool((a[m] == col[m]).any()), "in_final": bool((fin[n][m] == col[m]).any()),
                          "same": bool(np.array_equal(a, fin[n]))}
        for j, (i, p, _) in enumerate(rows):
            recs[i]["erase"][p].append(got.get(j))
        tick(len(recs))


def continue_from(den: Any, sampling: Any, x: Tensor, cond: Any, s: int) -> Tensor:
    """The final latents of sampling (a `SamplingConfig`) started from state `x` at step `s`."""
    sig = sampling.sigmas(den).to(x.device)[s:]
    return run(get_sampler(sampling.sampler)(den, x, sig, cond, first_step=s))


def splice_batch(den: Any, batch: Batch, noise_seeds: list[int], cfg: ProbeConfig, *, k: int, grid: Sequence[int], max_pairs: int = 1,
                 self_check: bool = False, erase: bool = False, tick: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One batch: K seeds per instance sampled once (cached at the grid), then every chosen pair spliced at every grid step.

    Per instance: `final_success` (K), `commit` (K observational commit steps), `n_differ`, `n_agree`, `pairs`
    [[a, b]], and per pair and grid step the outcome ("noise", "plan", "neither") of `forward` (A's noise, B's plan),
    `reverse` (B's noise, A's plan) and, with `self_check`, `self` (A into A: "noise" when A's final is reproduced);
    with `erase`, `erase`: the partial splice of `_erase`.
    """
    tick = tick or (lambda n: None)
    task, insts, b = batch.task, batch.instances, len(batch.instances)
    dev = den.device
    cond = _to(batch.cond, dev).repeat(k)  # row i * k + j: instance i, seed j
    rows = [i for i in range(b) for _ in range(k)]
    x = seeded_noise(batch.latent_shape, [noise_seed(int(inst.seed), j) for inst in insts for j in range(k)], device=dev)
    cache = _Cache(den, task, [insts[r] for r in rows], grid)
    final = run(get_sampler(cfg.sampling.sampler)(den, x, cfg.sampling.sigmas(den).to(dev), cond), cache)
    require_finite(final)
    frames = den.decode(final)
    fin = answers(task, [insts[r] for r in rows], frames)
    success = [bool(task.score(insts[r], f).success) for r, f in zip(rows, frames)]
    per_seed = [[a[n] for a in cache.answers] for n in range(b * k)]
    recs = []
    for i in range(b):
        pairs, n_differ, n_agree = choose_pairs(fin[i * k : (i + 1) * k], max_pairs)
        recs.append({"final_success": success[i * k : (i + 1) * k], "commit": [commit_step(per_seed[i * k + j]) for j in range(k)],
                     "n_differ": n_differ, "n_agree": n_agree, "pairs": [list(p) for p in pairs],
                     "forward": [[] for _ in pairs], "reverse": [[] for _ in pairs], **({"self": [[] for _ in pairs]} if self_check else {})})
    tick(b)
    # every splice of a grid step in one batch: (instance, pair, kind, noise row, plan row)
    jobs = [(i, p, kind, i * k + (a if kind != "reverse" else bb), i * k + (bb if kind == "forward" else a))
            for i, r in enumerate(recs) for p, (a, bb) in enumerate(r["pairs"])
            for kind in ("forward", "reverse", *(("self",) if self_check else ()))]
    if not jobs:
        return recs
    noise_rows = torch.tensor([j[3] for j in jobs], device=dev)
    plan_rows = torch.tensor([j[4] for j in jobs], device=dev)
    sub = cond.index(noise_rows)
    job_insts = [insts[j[0]] for j in jobs]
    for s in grid:
        xs = splice_latent(cache.x[s][noise_rows], cache.x0[s][noise_rows], cache.x0[s][plan_rows], cache.sigma[s])
        out = continue_from(den, cfg.sampling, xs, sub, s)
        require_finite(out, "spliced final latents")
        for (i, p, kind, nr, pr), a in zip(jobs, answers(task, job_insts, den.decode(out))):
            recs[i][kind][p].append("noise" if np.array_equal(a, fin[nr]) else "plan" if np.array_equal(a, fin[pr]) else "neither")
        tick(b)
    if erase:
        _erase(den, cfg, cache, cond, recs, k, grid, fin, tick)
    return recs


# -- the reading: pure functions over the records ---------------------------------------------------
def crossing(rates: Sequence[float], grid: Sequence[int], level: float = 0.5) -> float | None:
    """The step where the rate crosses `level` from below for the last time (interpolated between grid steps).

    grid[0] when the rate is at or above `level` everywhere; None when it ends below (never crossed)."""
    r = np.asarray(rates, dtype=float)
    below = np.nonzero(r < level)[0]
    if below.size == 0:
        return float(grid[0])
    i = int(below[-1])
    if i == len(r) - 1:
        return None
    return float(grid[i] + (level - r[i]) / (r[i + 1] - r[i]) * (grid[i + 1] - grid[i]))


def switch_step(outcomes: Sequence[str], grid: Sequence[int], n_steps: int) -> int:
    """A pair's causal switch step: the first grid step from which every later splice follows the plan (n_steps: never)."""
    s = len(outcomes)
    while s > 0 and outcomes[s - 1] == "plan":
        s -= 1
    return int(grid[s]) if s < len(outcomes) else n_steps


def _counts(recs: Sequence[dict[str, Any]], kinds: Sequence[str], g: int,
            keep: Callable[[dict[str, Any], int, str], bool] = lambda r, p, kind: True) -> np.ndarray:
    """(instances, G, 3): per instance and grid step, how many of its pairs' splices of `kinds` (kept by `keep`) ended at each outcome."""
    out = np.zeros((len(recs), g, len(OUTCOMES)), dtype=int)
    for n, r in enumerate(recs):
        for kind in kinds:
            for p, row in enumerate(r.get(kind, [])):
                if keep(r, p, kind):
                    for t, o in enumerate(row):
                        out[n, t, OUTCOMES.index(o)] += 1
    return out


def _quality(r: dict[str, Any]) -> Sequence[Any]:
    """A record's per-seed quality of the final: the benchmark score (`final_score`, --data runs), else the task's success."""
    return r["final_score"] if "final_score" in r else r["final_success"]


def _plan_donor_right(want: bool) -> Callable[[dict[str, Any], int, str], bool]:
    """Keep splices whose plan donor ended better (want=True: right, or the higher score) than the noise donor, or worse."""
    def keep(r: dict[str, Any], p: int, kind: str) -> bool:
        a, b = r["pairs"][p]
        noise, plan = (a, b) if kind == "forward" else (b, a)
        q = _quality(r)
        return q[plan] != q[noise] and (q[plan] > q[noise]) == want
    return keep


def _curve(counts: np.ndarray, grid: Sequence[int], sigmas: Sequence[float]) -> list[dict[str, Any]]:
    tot = counts.sum(0)  # (G, 3)
    rows = []
    for t, s in enumerate(grid):
        n = int(tot[t].sum())
        rate = {o: int(tot[t, j]) for j, o in enumerate(OUTCOMES)}
        lo, hi = wilson(rate["plan"], n)
        rows.append({"step": int(s), "sigma": float(sigmas[s]), "n": n, **rate, "follow_plan": rate["plan"] / n, "ci95": [lo, hi],
                     "follow_noise": rate["noise"] / n, "neither_rate": rate["neither"] / n})
    return rows


def _curve_and_crossing(counts: np.ndarray, grid: Sequence[int], sigmas: Sequence[float]) -> dict[str, Any]:
    curve = _curve(counts, grid, sigmas)
    return {"curve": curve, "crossing": crossing([r["follow_plan"] for r in curve], grid)}


def bootstrap_crossing(counts: np.ndarray, grid: Sequence[int], *, n_boot: int = 2000,
                       seed: int = 0) -> tuple[list[float | None], float, list[float | None]]:
    """Percentile 95% CI of the crossing step, resampling instances: (ci widened to the grid, fraction of replicates that
    never cross, the percentile bounds before widening).

    A bound is None when more than 2.5% of the replicates lie beyond it (never cross)."""
    plan, tot = counts[:, :, OUTCOMES.index("plan")], counts.sum(2)  # (instances, G)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), size=(n_boot, len(counts)))
    never = float(len(grid))  # a sentinel above every crossing (crossings lie within the grid's span)
    vals = []
    for row in idx:
        t = tot[row].sum(0)
        c = crossing(plan[row].sum(0) / np.maximum(t, 1), grid)
        vals.append(never + grid[-1] if c is None else c)
    v = np.array(vals)
    big = never + grid[-1]
    lo, hi = float(np.quantile(v, 0.025, method="lower")), float(np.quantile(v, 0.975, method="higher"))
    ci = [None if lo >= big else _to_grid(lo, grid, -1), None if hi >= big else _to_grid(hi, grid, 1)]
    return ci, float(np.mean(v >= big)), [None if lo >= big else lo, None if hi >= big else hi]


def _to_grid(x: float, grid: Sequence[int], side: int) -> float:
    """A bound widened to the splice grid (side -1: the grid step at or below x; +1: at or above): a crossing between
    two splice steps may lie anywhere between them, so the interval is no finer than the grid."""
    g = np.asarray(grid, dtype=float)
    return float(g[g <= x + 1e-9].max() if side < 0 else g[g >= x - 1e-9].min()) if g[0] <= x <= g[-1] else float(x)


def analyse(recs: Sequence[dict[str, Any]], grid: Sequence[int], sigmas: Sequence[float]) -> dict[str, Any]:
    """The commitment curve, its 50% crossing with a bootstrap CI, controls and the paired observational comparison."""
    n_steps = len(sigmas) - 1
    with_pairs = [r for r in recs if r["pairs"]]
    out: dict[str, Any] = {
        "formula": FORMULA, "grid": list(grid), "grid_sigmas": [float(sigmas[s]) for s in grid], "n_instances": len(recs),
        "n": len(with_pairs), "n_pairs": sum(len(r["pairs"]) for r in recs),
        "pairs_differ": sum(r["n_differ"] for r in recs), "pairs_agree_skipped": sum(r["n_agree"] for r in recs),
        "instances_where_seeds_agree": len(recs) - len(with_pairs),
    }
    scored = bool(recs) and "final_score" in recs[0]  # a --data run: finals scored by the benchmark's scorer, no per-step answer
    if scored:
        got = [s for r in recs for s in r["final_score"] if s is not None]
        out["final_mean_score"] = float(np.mean(got)) if got else None
    else:
        out["final_solve_rate"] = float(np.mean([s for r in recs for s in r["final_success"]])) if recs else None
        out["observational_commit_all_seeds"] = _stats([c for r in recs for c in r["commit"]])
    if not with_pairs:
        return out | {"verdict": SEEDS_AGREE, "crossing": {"step": None, "ci95": None},
                      "reading": "every seed of every instance ends at the same answer: no plan can be told from another's"}
    g = len(grid)
    fwd = _counts(with_pairs, ["forward"], g)
    out["curve"] = _curve(fwd, grid, sigmas)
    out["reverse_curve"] = _curve(_counts(with_pairs, ["reverse"], g), grid, sigmas)
    both = _counts(with_pairs, ["forward", "reverse"], g)
    out["both_directions"] = _curve_and_crossing(both, grid, sigmas)
    out["by_plan_donor"] = {}
    donors = (("plan_scores_higher", True), ("plan_scores_lower", False)) if scored else (
        ("plan_right_noise_wrong", True), ("plan_wrong_noise_right", False))
    for name, want in donors:
        c = _counts(with_pairs, ["forward", "reverse"], g, _plan_donor_right(want))
        if c.sum():
            out["by_plan_donor"][name] = _curve_and_crossing(c, grid, sigmas)
    if any("erase" in r for r in with_pairs):
        out["erase"] = _erase_curve(with_pairs, grid)
    if any("self" in r for r in with_pairs):
        sc = _counts(with_pairs, ["self"], g).sum((0, 1))
        out["self_check"] = {"reproduced": int(sc[0]), "n": int(sc.sum()), "rate": float(sc[0] / sc.sum())}
    rates = [row["follow_plan"] for row in out["curve"]]
    c = crossing(rates, grid)
    ci, never, ci_raw = bootstrap_crossing(fwd, grid)
    rev = crossing([row["follow_plan"] for row in out["reverse_curve"]], grid)
    out["crossing"] = {"step": c, "ci95": ci if c is not None else None, "bootstrap_never_cross": never,
                       "ci95_before_grid": ci_raw if c is not None else None,
                       "ci_width": None if c is None or None in ci else ci[1] - ci[0], "reverse_step": rev,
                       "definition": "last step where the follow-plan rate of the forward splice (A's noise, B's plan) crosses 50% "
                                     "from below, linear between grid steps; 95% CI: percentile bootstrap over instances, each bound "
                                     "widened to the nearest splice step outside it (the grid's resolution)"}
    cau = [np.mean([switch_step(row, grid, n_steps) for row in r["forward"]]) for r in with_pairs]
    out["causal_switch"] = _stats(cau) | {"definition": "per pair, the first grid step from which every later forward splice "
                                                        f"follows the plan ({n_steps}: never); per instance, the mean over its pairs"}
    obs_median = None
    if not scored:
        obs = [np.mean([(r["commit"][a] + r["commit"][b]) / 2 for a, b in r["pairs"]]) for r in with_pairs]
        d, lo, hi = bootstrap_diff(obs, cau)  # mean(causal - observational), paired over instances
        out["observational_commit_pairs"] = _stats(obs)
        obs_median = out["observational_commit_pairs"]["median"]
        out["causal_minus_observational"] = {"diff": d, "ci95": [lo, hi],
                                             "definition": "per instance: causal switch step minus the observational commit step "
                                                           "(mean of A's and B's), paired bootstrap"}
    out["crossing"]["why_wide"] = why_wide(out["crossing"]["ci_width"], len(with_pairs), grid, out["crossing"]["ci95_before_grid"])
    out["verdict"] = "measured" if c is not None else NEVER_PLAN
    out["reading"] = _reading(c, ci, obs_median) + (
        f"; {out['crossing']['why_wide']}" if out["crossing"]["why_wide"] else "")
    return out


CI_TARGET = 4.0  # steps: a crossing CI narrower than this places the decision within a fifth of a 20-step trajectory


def why_wide(width: float | None, n: int, grid: Sequence[int], before_grid: Sequence[float | None] | None = None) -> str | None:
    """Why the crossing's CI is not narrower than CI_TARGET steps (None when it is, or when there is no CI).

    `before_grid`: the bootstrap bounds before widening; when they are narrower than CI_TARGET, the grid sets the width
    (the bounds straddle a splice step), not n."""
    if width is None or width < CI_TARGET:
        return None
    spacing = min(b - a for a, b in zip(grid, grid[1:])) if len(grid) > 1 else float("inf")
    if spacing >= CI_TARGET:
        return (f"the CI ({width:g} steps) cannot be narrower than {CI_TARGET:g} steps on this grid: its bounds lie on splice "
                f"steps {spacing} apart; splice more often (--every)")
    lo, hi = before_grid if before_grid is not None else (None, None)
    if lo is not None and hi is not None and hi - lo < CI_TARGET:
        inside = [g for g in grid if lo < g < hi]
        return (f"the CI is {width:g} steps wide, not narrower than {CI_TARGET:g}, although its bootstrap bounds before widening, "
                f"[{lo:.1f}, {hi:.1f}], are {hi - lo:.1f} steps apart: widened to the splice steps outside them they straddle "
                f"step{'s' if len(inside) > 1 else ''} {', '.join(str(g) for g in inside)}, so the {spacing}-step grid sets the "
                "width, not n; splice every step near the crossing (--every 1) to resolve it")
    need = int(np.ceil(n * (width / spacing) ** 2))  # the width brought to one grid spacing, shrinking as 1/sqrt(n)
    return (f"the CI is {width:g} steps wide, not narrower than {CI_TARGET:g}, at n={n} instances with a differing pair: "
            f"its bounds are bootstrap quantiles widened to the splice grid ({spacing} steps), so the instance-to-instance "
            f"spread sets it; at this spread about {need} such instances would bring it to one grid spacing (width ~ 1/sqrt(n))")


def _erase_curve(recs: Sequence[dict[str, Any]], grid: Sequence[int]) -> dict[str, Any]:
    """Per splice step: of the runs whose largest drawn wrong candidate was erased, how many re-draw it (Wilson CI), split by
    whether A's own final draws it (a kept branch) or not (a candidate A prunes anyway), and how many keep A's answer."""
    rows = []
    for t, s in enumerate(grid):
        got = [row[t] for r in recs for row in r["erase"] if row[t] is not None]
        row: dict[str, Any] = {"step": int(s), "n": len(got)}
        for name, pick in (("all", lambda e: True), ("kept_by_a", lambda e: e["in_final"]), ("pruned_by_a", lambda e: not e["in_final"])):
            sub = [e for e in got if pick(e)]
            k = sum(e["redrawn"] for e in sub)
            row[name] = {"n": len(sub), "redrawn": k, "rate": k / len(sub) if sub else None,
                         "ci95": list(wilson(k, len(sub))) if sub else None}
        row["same_answer_rate"] = sum(e["same"] for e in got) / len(got) if got else None
        rows.append(row)
    return {"per_step": rows, "sticks": _erase_sticks(recs, grid, rows),
            "what": "A's clean estimate at the step with its largest drawn wrong candidate (a maze: lit dead-end branch) painted "
                    "back to the true video's colours, A's noise kept (the splice formula with the edited plan); redrawn: the "
                    "final draws the erased colour on an erased block"}


ERASE_MIN_N = 5  # erasures of kept candidates per splice step below which the erase crossing gets no bootstrap CI


def _erase_sticks(recs: Sequence[dict[str, Any]], grid: Sequence[int], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The step from which erasing a candidate A's own final keeps sticks: the not-re-drawn rate of those erasures crosses
    50% from below (as `crossing`), over the splice steps that have such erasures; a percentile bootstrap CI over instances
    when every one of those steps has at least ERASE_MIN_N."""
    at = [t for t, r in enumerate(rows) if r["kept_by_a"]["n"]]
    out: dict[str, Any] = {"definition": "last step where the fraction of erased kept-by-A candidates that are not re-drawn "
                                         "crosses 50% from below, linear between splice steps that have such erasures"}
    if not at:
        return out | {"step": None, "ci95": None, "why": "no erasure of a candidate A's final keeps"}
    steps = [grid[t] for t in at]
    counts = np.zeros((len(recs), len(at), len(OUTCOMES)), dtype=int)  # "plan": the erasure sticks, "noise": re-drawn
    for n, r in enumerate(recs):
        for row in r["erase"]:
            for j, t in enumerate(at):
                e = row[t]
                if e is not None and e["in_final"]:
                    counts[n, j, OUTCOMES.index("noise" if e["redrawn"] else "plan")] += 1
    tot = counts.sum((0, 2))
    step = crossing(counts[:, :, OUTCOMES.index("plan")].sum(0) / tot, steps)
    if step is None or min(tot) < ERASE_MIN_N:
        why = None if step is None else f"fewer than {ERASE_MIN_N} erasures at some splice step (at least {int(min(tot))})"
        return out | {"step": step, "ci95": None, "why": why or "the erasures are re-drawn at every step"}
    ci, _, _ = bootstrap_crossing(counts, steps)
    return out | {"step": step, "ci95": ci}


def _stats(v: Sequence[float]) -> dict[str, float | None]:
    a = np.asarray(v, dtype=float)
    return {"mean": float(a.mean()), "median": float(np.median(a))} if a.size else {"mean": None, "median": None}


def _reading(c: float | None, ci: list[float | None], obs_median: float | None) -> str:
    if c is None:
        return "the outcome follows the noise at every splice step: the plan never decides within the grid"
    span = f"95% CI {_fmt(ci[0])}-{_fmt(ci[1])}"
    obs = (f"the decoded answer stops changing at step {obs_median:.1f} (median, observational)" if obs_median is not None else
           "no observational commit step (a benchmark scorer judges finished videos only: see probe cos --data)")
    return (f"the answer is decided at step {c:.1f} ({span}): before it the outcome follows the noise (the model still decides), "
            f"after it the plan (committed); {obs}")


def _sticks_text(st: dict[str, Any]) -> str:
    head = "an erased candidate that A keeps stops being re-drawn at step "
    if st["step"] is None:
        return f"{head}- ({st['why']})"
    ci = f"95% CI {_fmt(st['ci95'][0])}-{_fmt(st['ci95'][1])}" if st["ci95"] else f"no CI: {st['why']}"
    return f"{head}{st['step']:.1f} ({ci})"


def _fmt_rate(r: dict[str, Any]) -> str:
    return "-" if r["rate"] is None else f"{r['redrawn']}/{r['n']}"


def _fmt(x: float | None) -> str:
    return "open" if x is None else f"{x:.1f}"


# -- the probe ---------------------------------------------------------------------------------------
def run_splice(den: Any, cfg: ProbeConfig, out: str, *, k: int = 8, every: int = 2, max_pairs: int = 1, self_check: bool = False,
               erase: bool = False, progress: bool = True, folder: RunFolder | None = None, ray_address: str | None = None,
               num_workers: int | None = None) -> dict[str, Any]:
    """The splice probe into `out` (resumable): records, summary, figure."""
    if k < 2:
        raise ValueError(f"--k must be >= 2 (pairs of seeds), got {k}")
    if max_pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {max_pairs}")
    if erase and get_task(cfg.task).background is None:
        raise ValueError(f"--erase paints a drawn candidate back to the background: task {cfg.task!r} has no background colour")
    grid = splice_grid(cfg.sampling.steps, every)
    run_ = ProbeRun(out, "probe-splice", held=held_out(cfg), config={"probe": cfg.__dict__ | {"sampling": cfg.sampling.__dict__}, "k": k, "every": every,
                                          "pairs": max_pairs, "self_check": self_check, **({"erase": True} if erase else {})})
    fn = partial(splice_batch, k=k, grid=grid, max_pairs=max_pairs, self_check=self_check, erase=erase)
    recs = run_sharded(den, cfg, fn, folder=run_.folder, label="splice", work_per_sample=1 + len(grid) * (1 + erase), progress=progress,
                       ray_address=ray_address, num_workers=num_workers)
    ok, errors = split_errors(recs)
    sigmas = [float(v) for v in cfg.sampling.sigmas(den)]
    summary = analyse(ok, grid, sigmas) | {"task": cfg.task, "size": cfg.size, "k": k, "n_errors": len(errors), "errors": errors}
    if "curve" in summary:
        plot_curves(run_, [(f"{cfg.task} {cfg.size}", summary)])
    if "erase" in summary:
        plot_erase(run_, [(f"{cfg.task} {cfg.size}", summary)])
    return run_.finish(summary, "\n".join(_text(cfg, summary)))


def _text(cfg: ProbeConfig, s: dict[str, Any]) -> list[str]:
    return summary_lines(f"Splice on {s['n_instances']} held-out {cfg.task} {cfg.size}x{cfg.size} instances, K={s['k']} seeds each, "
                         f"{cfg.sampling.steps} {cfg.sampling.sampler} steps, splice steps {s['grid']}.", s)


def summary_lines(head: str, s: dict[str, Any]) -> list[str]:
    """The text summary of an `analyse` result under a first line `head` (the run's instances and settings)."""
    t = [head, f"splice: {FORMULA}",
         f"pairs: {s['n_pairs']} spliced on {s['n']} instances; {s['pairs_differ']} seed pairs differ, {s['pairs_agree_skipped']} agree "
         f"(skipped); {s['instances_where_seeds_agree']} instances where every seed agrees"]
    if "curve" not in s:
        return t + [f"{SEEDS_AGREE}"]
    t.append("follow-plan rate (A's noise, B's plan) per splice step: "
             + "; ".join(f"{r['step']} {r['follow_plan']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" for r in s["curve"]))
    t.append("reverse (B's noise, A's plan): " + "; ".join(f"{r['step']} {r['follow_plan']:.2f}" for r in s["reverse_curve"]))
    if "self_check" in s:
        t.append(f"A spliced into A reproduces A's answer in {s['self_check']['reproduced']}/{s['self_check']['n']}")
    for name, d in s["by_plan_donor"].items():
        t.append(f"both directions, {name.replace('_', ' ')}: " + "; ".join(f"{r['step']} {r['follow_plan']:.2f} (n={r['n']})" for r in d["curve"])
                 + f"; crossing {_fmt(d['crossing'])}")
    if "erase" in s:
        t.append("erased wrong candidate re-drawn (kept by A / pruned by A) per splice step: " + "; ".join(
            f"{r['step']} {_fmt_rate(r['kept_by_a'])} / {_fmt_rate(r['pruned_by_a'])}" for r in s["erase"]["per_step"] if r["n"]))
        t.append(_sticks_text(s["erase"]["sticks"]))
    t.append(s["reading"])
    cm = s.get("causal_minus_observational")
    if cm:
        t.append(f"causal switch step minus observational commit step, paired over instances: {cm['diff']:.2f} "
                 f"[{cm['ci95'][0]:.2f}, {cm['ci95'][1]:.2f}]")
    return t


def plot_curves(run_: ProbeRun, lines: Sequence[tuple[str, dict[str, Any]]], name: str = "splice_curve.png") -> None:
    """Follow-plan rate vs splice step, one line per (label, splice summary); crossing and observational commit marked."""
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 3.6))
    for label, s in lines:
        curve = s["curve"]
        xs, ys = [r["step"] for r in curve], [r["follow_plan"] for r in curve]
        err = [[y - r["ci95"][0] for y, r in zip(ys, curve)], [r["ci95"][1] - y for y, r in zip(ys, curve)]]
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{label} (n={s['n']})")[0]
        ax.plot(xs, [r["follow_plan"] for r in s["reverse_curve"]], ":", color=line.get_color(), label=f"{label}: reverse splice")
        c = s["crossing"]
        if c["step"] is not None:
            ax.axvline(c["step"], color=line.get_color(), lw=1)
            if c["ci95"] and None not in c["ci95"]:
                ax.axvspan(c["ci95"][0], c["ci95"][1], color=line.get_color(), alpha=0.12)
        obs = s.get("observational_commit_pairs", {}).get("median")
        if obs is not None:
            ax.axvline(obs, color=line.get_color(), ls="--", lw=1, label=f"{label}: observational commit (median)")
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    _save_rate_figure(pyplot, fig, ax, run_, name, "final follows the plan (95% CI)", "When is the answer decided? (splice)",
                      "Fraction of spliced runs (A's noise, B's clean estimate at the step) whose final answer is B's; dotted: the "
                      "reverse splice; solid line and band: the 50% crossing with its bootstrap CI; dashed: the step after which "
                      "the decoded answer stops changing (observational).")


def _save_rate_figure(pyplot: Any, fig: Any, ax: Any, run_: ProbeRun, name: str, ylabel: str, title: str, caption: str) -> None:
    """A rate-per-splice-step axis finished (limits 0-1, labels, legend) and saved as the run's figure `name`."""
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("splice step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_.figure(name, title, caption), dpi=120)
    pyplot.close(fig)


def plot_erase(run_: ProbeRun, lines: Sequence[tuple[str, dict[str, Any]]], name: str = "splice_erase.png") -> None:
    """Re-draw rate of an erased wrong candidate vs splice step, one line per (label, splice summary with `erase`): solid, the
    candidates A's own final keeps (Wilson CI); dotted, those A prunes anyway."""
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 3.6))
    for label, s in lines:
        rows = [r for r in s["erase"]["per_step"] if r["kept_by_a"]["n"]]
        xs, ys = [r["step"] for r in rows], [r["kept_by_a"]["rate"] for r in rows]
        err = [[y - r["kept_by_a"]["ci95"][0] for y, r in zip(ys, rows)], [r["kept_by_a"]["ci95"][1] - y for y, r in zip(ys, rows)]]
        n = sum(r["kept_by_a"]["n"] for r in rows)
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{label}: kept by A ({n} erasures)")[0]
        pruned = [r for r in s["erase"]["per_step"] if r["pruned_by_a"]["n"]]
        if pruned:
            ax.plot([r["step"] for r in pruned], [r["pruned_by_a"]["rate"] for r in pruned], ":", marker=".", color=line.get_color(),
                    label=f"{label}: pruned by A ({sum(r['pruned_by_a']['n'] for r in pruned)})")
    _save_rate_figure(pyplot, fig, ax, run_, name, "erased candidate re-drawn (95% CI)",
                      "Does the model re-draw an erased candidate? (splice --erase)",
                      "A's clean estimate at the step with its largest drawn wrong candidate painted back to the true video's "
                      "colours, A's noise kept: the fraction whose final draws it again; solid, candidates A's own final keeps; "
                      "dotted, those A prunes anyway.")


def compare_runs(runs: Sequence[str], out: str) -> dict[str, Any]:
    """One figure over several splice run folders (one line per task/size) and their crossings, in a folder `steplens report` renders."""
    from ..report.folders import load_run

    lines = []
    for path in runs:
        r = load_run(path)
        if r.kind == "probe-splice":
            cfg = r.config["probe"]
            label = f"{cfg['model']} {cfg['task']} {cfg['size']}"
        elif r.kind == BENCH_KIND:  # probe splice --data
            label = f"{r.config.get('model', '?')} {Path(r.config['data']).name} ({r.config['scorer']})"
        else:
            raise ValueError(f"{path}: a {r.kind} run, not a splice run (steplens probe splice)")
        lines.append((label, r.summary, str(path)))
    run_ = ProbeRun(out, "probe-splice-compare", {"runs": [p for _, _, p in lines]})
    measured = [(label, s) for label, s, _ in lines if "curve" in s]
    if measured:
        plot_curves(run_, measured)
    erased = [(label, s) for label, s in measured if "erase" in s]
    if erased:
        plot_erase(run_, erased)
    rows = [{"run": p, "label": label, "n": s.get("n"), "verdict": s.get("verdict"), "crossing": s.get("crossing", {}).get("step"),
             "crossing_ci95": s.get("crossing", {}).get("ci95"),
             "observational_commit_median": s.get("observational_commit_pairs", {}).get("median")} for label, s, p in lines]
    text = [_compare_line(r) for r in rows]
    return run_.finish({"runs": rows}, "\n".join(["Splice crossings per run:", *text]))


def _compare_line(r: dict[str, Any]) -> str:
    """One run's line of `compare_runs`: its crossing [CI] and observational commit (none on --data runs), or its verdict."""
    if r["crossing"] is None:
        return f"{r['label']}: {r['verdict']}"
    obs = r["observational_commit_median"]
    return (f"{r['label']}: decided at step {r['crossing']:.1f} [{_fmt(r['crossing_ci95'][0])}, {_fmt(r['crossing_ci95'][1])}], "
            + (f"observational commit {obs:.1f} " if obs is not None else "") + f"(n={r['n']})")
