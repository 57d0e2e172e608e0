"""Training-free latent trajectory ensembles (paper section 6), with compute-matched test-time baselines.

K trajectories per instance (one noise seed each) run as one batch, seed-major within instance: rows
`b*K + j`. During a window of steps `[start, end)` a `StepCallback` merges each instance's K latents;
everything else is the ordinary sampler. After the window either all K continue and one is selected
(`after="all"`), or only the first continues (`after="single"`: the paper's K-inputs-one-output,
with the cost K*M + (steps - M) network evaluations per instance, M = window end).

Merge rules at step i (sigma = s, next sigma = s'), per instance group of K:
- `mean_xt`: every x_next := the group mean of x_next. With a deterministic sampler this collapses the
  K seeds into one trajectory (every later step starts from the same latent): only the window's first
  step needs K evaluations, a longer window changes nothing, and steplens computes one trajectory per
  instance from there (cost K*(start+1) + the remaining steps). The mean of K independent
  noises has std 1/sqrt(K), so at high sigma the merged latent is off the noise distribution;
  `norm_correct` splits x_next_k = (1 - s') x0_hat_k + n_k (n_k = s' eps_k for Euler) and rescales the
  mean noise part to keep its std: merged = (1 - s') mean_k x0_hat_k + mean_k n_k * r, with
  r = mean_k std(n_k) / std(mean_k n_k), the std taken per instance over all latent elements (frame 0
  left out for image-to-video, where it is the given image). For independent noises r ~ sqrt(K); for
  identical ones r = 1.
- `mean_v`: x_next_k := x_k + mean_j (x_next_j - x_j), i.e. x_k + (s' - s) mean_j v_j for Euler (for Heun
  the step's effective, trapezoidal velocity is averaged). Keeps each seed's own position.
- `mean_x0_renoise`: x_next_k := (1 - s') mean_j x0_hat_j + s' eps_k, eps_k = each trajectory's own noise
  estimate x_k + (1 - s) v_k: one shared clean estimate, K distinct noises (keeps diversity).

Selection among K continued trajectories: `first`; `agreement` (no ground truth: the trajectory whose
decoded video is closest, in mean L2, to the other K-1); `vote` (majority over the final frames snapped
to the palette, ties and the pick within the winning answer by agreement); `oracle` (best task score:
an upper bound that NEEDS GROUND TRUTH, never a method one could deploy).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import ConfigError, atomic_write_text, to_dict, write_json
from .models.protocol import Cond, eps_from_velocity, noise_to
from .runner import SamplingConfig, held_out_seeds, noise_seed, prepare
from .sampling import NFE_PER_STEP, StepCallback, StepEvent, get_sampler, run, seeded_noise
from .stats import bootstrap_diff, proportion_ci, wilson
from .tasks import Score, get_task

RULES = ("mean_xt", "mean_v", "mean_x0_renoise")
AFTER = ("all", "single")
SELECT = ("first", "agreement", "vote", "oracle")


@dataclass(frozen=True)
class EnsembleConfig:
    """K seeds per instance, merged by `rule` during steps [window[0], window[1]), then `after`/`select`."""

    k: int = 3
    window: tuple[int, int] = (0, 2)
    rule: str = "mean_xt"
    norm_correct: bool = False
    after: str = "all"
    select: str = "first"

    def __post_init__(self) -> None:
        try:
            start, end = (int(v) for v in self.window)
        except (TypeError, ValueError):
            raise ConfigError(f"window must be two integers (start, end), got {self.window!r}") from None
        object.__setattr__(self, "window", (start, end))
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if not 0 <= start <= end:
            raise ConfigError(f"window must satisfy 0 <= start <= end, got {start}:{end}")
        if self.rule not in RULES:
            raise ConfigError(f"unknown rule {self.rule!r}; choose from {list(RULES)}")
        if self.after not in AFTER:
            raise ConfigError(f"after must be one of {list(AFTER)}, got {self.after!r}")
        if self.select not in SELECT:
            raise ConfigError(f"unknown select {self.select!r}; choose from {list(SELECT)}")
        if self.norm_correct and self.rule != "mean_xt":
            raise ConfigError(f"norm_correct applies to rule mean_xt only (got rule {self.rule!r})")
        if self.after == "single" and self.select != "first":
            raise ConfigError("after='single' keeps one trajectory; select must be 'first'")

    def check(self, steps: int) -> None:
        """Raise ConfigError if the window does not fit a schedule of `steps` steps."""
        if self.window[1] > steps:
            raise ConfigError(f"window end {self.window[1]} exceeds the {steps} sampling steps")

    @property
    def merges(self) -> bool:
        return self.k > 1 and self.window[1] > self.window[0]

    @property
    def collapses(self) -> bool:
        """mean_xt gives all K trajectories of an instance one latent at the window's first step; with a
        deterministic sampler they stay identical, so one per instance is computed from there on."""
        return self.merges and self.rule == "mean_xt"


# -- merging, as a step callback ----------------------------------------------------------------------
def _group(t: Tensor, k: int) -> Tensor:
    return t.reshape(-1, k, *t.shape[1:])  # (B*K, ...) -> (B, K, ...)


def _ungroup(t: Tensor) -> Tensor:
    return t.reshape(-1, *t.shape[2:])  # (B, K, ...) -> (B*K, ...)


def _sample_std(t: Tensor, skip_first_frame: bool) -> Tensor:
    """(B, K, C, F, H, W) -> (B, K, 1, 1, 1, 1) std over each sample's elements."""
    if skip_first_frame and t.shape[3] > 1:
        t = t[:, :, :, 1:]
    return t.flatten(2).std(-1).reshape(*t.shape[:2], 1, 1, 1, 1)


def merge(event: StepEvent, k: int, rule: str, *, norm_correct: bool = False, skip_first_frame: bool = False) -> Tensor:
    """The merged x_next (B*K, C, F, H, W) of one step's event for groups of `k` (see module doc)."""
    s1 = event.sigma_next
    x_next = _group(event.x_next, k)  # (B, K, C, F, H, W)
    if rule == "mean_xt":
        if not norm_correct:
            return _ungroup(x_next.mean(1, keepdim=True).expand_as(x_next))
        x0 = _group(event.x0_hat, k)
        noise = x_next - (1.0 - s1) * x0  # s' eps_k for Euler
        mean_noise = noise.mean(1, keepdim=True)  # (B, 1, ...)
        target, now = _sample_std(noise, skip_first_frame).mean(1, keepdim=True), _sample_std(mean_noise, skip_first_frame)
        ratio = torch.where(now > 0, target / now.clamp_min(1e-30), torch.ones_like(now))
        merged = (1.0 - s1) * x0.mean(1, keepdim=True) + mean_noise * ratio
        return _ungroup(merged.expand_as(x_next))
    if rule == "mean_v":
        x = _group(event.x, k)
        return _ungroup(x + (x_next - x).mean(1, keepdim=True))
    if rule == "mean_x0_renoise":
        x0_bar = _group(event.x0_hat, k).mean(1, keepdim=True)
        eps = _group(eps_from_velocity(event.x, event.sigma, event.velocity), k)  # each trajectory's own noise
        return _ungroup(noise_to(x0_bar, eps, s1))
    raise ConfigError(f"unknown rule {rule!r}; choose from {list(RULES)}")


def merge_callback(ens: EnsembleConfig, *, skip_first_frame: bool = False) -> StepCallback:
    """A StepCallback that merges each group of `ens.k` trajectories during `ens.window`."""
    start, end = ens.window

    def callback(event: StepEvent) -> Tensor | None:
        if not ens.merges or not start <= event.step < end:
            return None
        return merge(event, ens.k, ens.rule, norm_correct=ens.norm_correct, skip_first_frame=skip_first_frame)

    return callback


@torch.no_grad()
def ensemble_latents(denoiser: Any, x: Tensor, sigmas: Tensor, cond: Cond, ens: EnsembleConfig, *, sampler: str = "euler",
                     callback: StepCallback | Sequence[StepCallback] | None = None, dedupe: bool = True) -> Tensor:
    """Sample B*K trajectories (x, cond: (B*K, ...), seed-major per instance) with merging.

    Returns (B*K, C, F, H, W) final latents for after="all", (B, C, F, H, W) for after="single".
    Extra `callback`s see every step after the merge (and only the kept trajectories after the window).
    With a collapsing rule (`ens.collapses`: mean_xt) and `dedupe`, only one trajectory per instance is
    computed after the window's first step (the K are identical from there; after="all" returns K
    copies), so extra callbacks see B rows from then on. `dedupe=False` computes all K throughout.
    """
    if x.shape[0] % ens.k:
        raise ValueError(f"batch of {x.shape[0]} trajectories is not a multiple of k={ens.k}")
    steps = len(sigmas) - 1
    ens.check(steps)
    extra = [] if callback is None else ([callback] if callable(callback) else list(callback))
    make = get_sampler(sampler)
    cbs = [merge_callback(ens, skip_first_frame=cond.image is not None), *extra]
    keep = slice(None, None, ens.k)  # the first trajectory of each instance
    if dedupe and ens.collapses:
        first = ens.window[0]
        x_mid = run(make(denoiser, x, sigmas[: first + 2], cond), cbs)  # all K through the first merge
        one = x_mid[keep]
        if first + 1 < steps:
            one = run(make(denoiser, one, sigmas[first + 1 :], cond.index(keep), first_step=first + 1), extra)
        return one if ens.after == "single" else one.repeat_interleave(ens.k, 0)
    if ens.after == "all" or ens.k == 1:
        return run(make(denoiser, x, sigmas, cond), cbs)
    end = ens.window[1]
    x_mid = run(make(denoiser, x, sigmas[: end + 1], cond), cbs)  # all K up to the window's end
    return run(make(denoiser, x_mid[keep], sigmas[end:], cond.index(keep), first_step=end), extra)


# -- compute accounting ---------------------------------------------------------------------------
def step_nfe(sampler: str, steps: int) -> list[int]:
    """Network evaluations of each step; multi-evaluation samplers (Heun) take an Euler last step."""
    get_sampler(sampler)  # validates the name
    per = NFE_PER_STEP[sampler]
    return [per] * (steps - 1) + [1] if steps >= 1 else []


def nfe_per_instance(ens: EnsembleConfig, sampling: SamplingConfig) -> int:
    """Network evaluations per instance: K trajectories through the window, then K or 1 to the end.

    A collapsing rule (mean_xt) needs K only up to the window's first step (see `ensemble_latents`).
    """
    per_step = step_nfe(sampling.sampler, sampling.steps)
    if ens.collapses:
        m = ens.window[0] + 1
        return ens.k * sum(per_step[:m]) + sum(per_step[m:])
    if ens.after == "all" or ens.k == 1:
        return ens.k * sum(per_step)
    m = ens.window[1]
    return ens.k * sum(per_step[:m]) + sum(per_step[m:])


def matched_steps(target_nfe: int, sampler: str) -> int:
    """The most steps a single trajectory can take within `target_nfe` evaluations."""
    steps = 1
    while sum(step_nfe(sampler, steps + 1)) <= target_nfe:
        steps += 1
    return steps


# -- selection --------------------------------------------------------------------------------------
def agreement_distances(decoded: np.ndarray) -> np.ndarray:
    """(K, ...) decoded videos -> (K,) mean L2 distance of each to the other K-1 (0 for K = 1)."""
    flat = torch.as_tensor(np.asarray(decoded, dtype=np.float32).reshape(len(decoded), -1) / 255.0, dtype=torch.float64)
    if len(flat) < 2:
        return np.zeros(len(flat))
    d = torch.cdist(flat, flat)  # (K, K)
    return (d.sum(1) / (len(flat) - 1)).numpy()


def vote_keys(finals: Tensor) -> list[bytes]:
    """(K, C, F, H, W) final latents -> one hashable answer per trajectory: the palette-snapped last frame."""
    from .models.dit import snap_to_palette

    snapped = snap_to_palette(finals[:, :, -1].float().cpu())  # (K, C, H, W)
    return [s.numpy().tobytes() for s in snapped]


def choose(select: str, finals: Tensor, decoded: np.ndarray, scores: Sequence[Score] | None = None) -> int:
    """Index of the chosen trajectory among K: finals (K, C, F, H, W), decoded (K, T, H, W, 3)."""
    k = len(finals)
    if select == "first" or k == 1:
        return 0
    if select == "oracle":
        if scores is None:
            raise ValueError("oracle selection needs ground-truth scores")
        return max(range(k), key=lambda j: (bool(scores[j].success), float(scores[j].score), -j))
    dist = agreement_distances(decoded)
    if select == "agreement":
        return int(np.argmin(dist))  # ties: lowest index
    if select == "vote":
        keys = vote_keys(finals)
        counts = {key: keys.count(key) for key in keys}
        best = max(counts.values())
        candidates = [j for j in range(k) if counts[keys[j]] == best]
        return min(candidates, key=lambda j: (dist[j], j))
    raise ValueError(f"unknown select {select!r}; choose from {list(SELECT)}")


def spread(finals: Tensor) -> float:
    """Mean pairwise RMS distance between K final latents (0 when the seeds collapsed into one)."""
    if len(finals) < 2:
        return 0.0
    flat = finals.flatten(1).double()
    d = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    k = len(flat)
    return float(d.sum() / (k * (k - 1)))


# -- running on task instances --------------------------------------------------------------------
@dataclass
class Trajectories:
    """What K trajectories per instance produced (before selection)."""

    seeds: list[int]
    finals: Tensor  # (B, K', C, F, H, W), K' = K or 1
    decoded: np.ndarray  # (B, K', T, H, W, 3) uint8
    scores: list[list[Score]]  # B x K'
    nfe: int


def run_trajectories(denoiser: Any, task_name: str, size: int, seeds: Sequence[int], sampling: SamplingConfig,
                     ens: EnsembleConfig, *, noise_scale: float = 1.0) -> Trajectories:
    """Generate the instances of `seeds`, sample K trajectories each (noise_seed(seed, j)), decode and score all.

    `noise_scale` multiplies the initial noise (1: the model's prior; < 1: a colder start).
    """
    task = get_task(task_name)
    n_frames = getattr(denoiser, "n_frames", 4)
    insts = [task.generate(int(s), size, n_frames=n_frames, cell_px=1) for s in seeds]
    batch = prepare(denoiser, task, insts)
    dev = denoiser.device
    x = seeded_noise(batch.latent_shape, [noise_seed(int(s), j) for s in seeds for j in range(ens.k)], device=dev)
    if noise_scale != 1.0:
        x = x * noise_scale
    cond = batch.cond.repeat(ens.k)
    lat = ensemble_latents(denoiser, x, sampling.sigmas(denoiser).to(dev), cond, ens, sampler=sampling.sampler)
    b = len(insts)
    finals = lat.reshape(b, -1, *lat.shape[1:])  # (B, K', C, F, H, W)
    decoded = denoiser.decode(lat)
    decoded = decoded.reshape(b, finals.shape[1], *decoded.shape[1:])
    scores = [[task.score(inst, v) for v in vids] for inst, vids in zip(insts, decoded)]
    return Trajectories([int(s) for s in seeds], finals, decoded, scores, nfe_per_instance(ens, sampling))


def select_results(traj: Trajectories, select: str) -> list[dict[str, Any]]:
    """Per-instance result dicts for one selection rule over already sampled trajectories."""
    out = []
    for i, seed in enumerate(traj.seeds):
        scores = traj.scores[i]
        j = choose(select, traj.finals[i], traj.decoded[i], scores)
        r: dict[str, Any] = {"seed": seed, "success": bool(scores[j].success), "score": float(scores[j].score),
                             "chosen": j, "nfe": traj.nfe, "details": scores[j].details}
        if len(scores) > 1:
            r["traj_success"] = [bool(s.success) for s in scores]
            r["traj_score"] = [float(s.score) for s in scores]
            r["spread"] = spread(traj.finals[i])
        out.append(r)
    return out


def run_ensemble(denoiser: Any, task_name: str, size: int, seeds: Sequence[int], sampling: SamplingConfig,
                 ens: EnsembleConfig) -> list[dict[str, Any]]:
    """Ensemble-sample the instances of `seeds` (one batch) and return one result dict per instance.

    Args: seeds are instance seeds; trajectory j of instance s starts from noise_seed(s, j).
    Returns: dicts with success, score, chosen (trajectory index), nfe, and per-trajectory
    traj_success / traj_score / spread when more than one trajectory was continued.
    """
    ens.check(sampling.steps)
    return select_results(run_trajectories(denoiser, task_name, size, seeds, sampling, ens), ens.select)


# -- methods and comparisons ------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Method:
    """A named test-time method: an ensemble config, optionally with its own number of steps and noise scale."""

    name: str
    ens: EnsembleConfig = field(default_factory=lambda: EnsembleConfig(k=1, window=(0, 0)))
    steps: int | None = None  # None: the comparison's steps
    noise_scale: float = 1.0  # multiplies the initial noise (see `baselines`: single_cold)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"method name {self.name!r} must match {_NAME.pattern}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 < self.noise_scale <= 1e3:
            raise ConfigError(f"noise_scale must be in (0, 1000], got {self.noise_scale}")

    def sampling(self, base: SamplingConfig) -> SamplingConfig:
        return base if self.steps is None else replace(base, steps=self.steps)


def method_name(ens: EnsembleConfig) -> str:
    s, e = ens.window
    return f"k{ens.k}_w{s}-{e}_{ens.rule}{'_nc' if ens.norm_correct else ''}_{ens.after}_{ens.select}"


def baselines(ens: EnsembleConfig, sampling: SamplingConfig) -> list[Method]:
    """The ensemble and its test-time baselines on the same instances and noises.

    single (k=1); single_matched (one seed, as many steps as the ensemble's NFE allow); best_of_k_oracle
    (needs ground truth: an upper bound); best_of_k_agreement; majority_vote (K unmerged seeds each); ensemble.
    For mean_xt without norm correction also single_cold: one seed whose initial noise is scaled by
    1/sqrt(K), the distribution of the mean of K noises, at no extra compute. It separates what averaging
    K predictions buys from what a colder start buys.
    """
    ens.check(sampling.steps)
    plain = EnsembleConfig(k=ens.k, window=(0, 0), after="all")
    methods = [Method("single"),
               Method("single_matched", steps=matched_steps(nfe_per_instance(ens, sampling), sampling.sampler))]
    if ens.k > 1:
        methods += [Method("best_of_k_oracle", replace(plain, select="oracle")),
                    Method("best_of_k_agreement", replace(plain, select="agreement")),
                    Method("majority_vote", replace(plain, select="vote"))]
    if ens.collapses and not ens.norm_correct:
        methods.append(cold_single(ens.k))
    return [*methods, Method("ensemble", ens)]


def cold_single(k: int, name: str = "single_cold") -> Method:
    """One seed started from noise of std 1/sqrt(k): what a mean of k noises looks like."""
    return Method(name, noise_scale=1.0 / k**0.5)


def sample_key(method: str, task: str, size: int, seed: int) -> str:
    return f"{method}__{task}_{size}_{seed:010d}"


def _traj_key(m: Method, base: SamplingConfig) -> tuple:
    e = m.ens
    return (e.k, e.window if e.merges else (0, 0), e.rule if e.merges else "", e.norm_correct and e.merges,
            e.after if e.k > 1 else "all", m.sampling(base).steps, m.noise_scale)


@dataclass(frozen=True)
class EnsembleShard:
    """One chunk of instances for one trajectory group, as shipped to a worker: a model spec, no tensors."""

    model: str
    task: str
    size: int
    seeds: tuple[int, ...]
    sampling: SamplingConfig
    ens: EnsembleConfig
    noise_scale: float
    selects: tuple[tuple[str, str], ...]  # (method name, selection rule) of the methods sharing these trajectories


def ensemble_shard(shard: EnsembleShard, denoiser: Any | None = None) -> list[dict[str, Any]]:
    """Sample one shard's trajectories once and return one result per (method, instance)."""
    from .distributed import worker_model

    den = denoiser if denoiser is not None else worker_model(shard.model)
    traj = run_trajectories(den, shard.task, shard.size, list(shard.seeds), shard.sampling, shard.ens, noise_scale=shard.noise_scale)
    return [{"method": name, **r} for name, sel in shard.selects for r in select_results(traj, sel)]


def _evaluate_methods(denoiser: Any, run: Any, task: str, size: int, seeds: list[int], sampling: SamplingConfig,
                      methods: Sequence[Method], *, max_batch: int, progress: bool, ray_address: str | None = None,
                      num_workers: int | None = None, model: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Evaluate every method on the same instances; methods sharing trajectories sample them once.

    Instances are cut into fixed chunks per trajectory group (so results do not depend on where an
    earlier run stopped); with `ray_address` the chunks run as Ray tasks (see `steplens.distributed`)
    on workers that load `model` (default: the denoiser's name), and the driver writes every result.
    """
    from functools import partial

    from rich.progress import Progress

    from .distributed import map_shards

    spec = model or getattr(denoiser, "name", None)
    if ray_address is not None and not isinstance(spec, str):
        raise ConfigError("a Ray run needs a model spec the workers can load (a shipped name, a path or wan:DIR)")
    groups: dict[tuple, list[Method]] = {}
    for m in methods:
        groups.setdefault(_traj_key(m, sampling), []).append(m)
    shards = []
    for group in groups.values():
        lead = group[0]
        per_chunk = max(1, max_batch // lead.ens.k)
        for i in range(0, len(seeds), per_chunk):
            chunk = [s for s in seeds[i : i + per_chunk] if any(not run.done(sample_key(m.name, task, size, s)) for m in group)]
            if chunk:
                shards.append(EnsembleShard(str(spec), task, size, tuple(chunk), lead.sampling(sampling), lead.ens, lead.noise_scale,
                                            tuple((m.name, m.ens.select) for m in group)))
    total = len(seeds) * len(methods)
    done = sum(run.done(sample_key(m.name, task, size, s)) for m in methods for s in seeds)
    with Progress(disable=not progress) as bar:
        tid = bar.add_task(f"ensemble {task} {size}x{size}", total=total, completed=done)

        def commit(i: int, rows: list[dict[str, Any]]) -> None:
            new = {k: r for r in rows if not run.done(k := sample_key(r["method"], task, size, r["seed"]))}
            run.write_many(new)  # a chunk's results land together (see RunFolder.write_many)
            bar.advance(tid, len(new))

        fn = ensemble_shard if ray_address is not None else partial(ensemble_shard, denoiser=denoiser)
        map_shards(fn, shards, ray_address=ray_address, num_workers=num_workers, on_result=commit)
    return {m.name: run.results([sample_key(m.name, task, size, s) for s in seeds]) for m in methods}


def summarize_methods(results: dict[str, list[dict[str, Any]]], methods: Sequence[Method], sampling: SamplingConfig,
                      baseline: str | None = None) -> dict[str, dict[str, Any]]:
    """Per method: solve rate with Wilson CI, mean score, NFE, and the paired bootstrap difference to `baseline`."""
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
        paired = [(ref[r["seed"]], r) for r in rs if r["seed"] in ref]
        if paired and m.name != base:
            a, b = zip(*paired)
            row["diff_vs_" + base] = {
                "solve_rate": list(bootstrap_diff([float(x["success"]) for x in a], [float(x["success"]) for x in b])),
                "mean_score": list(bootstrap_diff([x["score"] for x in a], [x["score"] for x in b]))}
        out[m.name] = row
    return out


def _fmt_ci(v: float, ci: Sequence[float]) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _table(summary: dict[str, dict[str, Any]], base: str) -> list[str]:
    lines = [f"{'method':<40} {'nfe':>5} {'solve rate [95% CI]':>24} {'diff vs ' + base + ' [95% CI]':>28}"]
    for name, s in summary.items():
        d = s.get("diff_vs_" + base)
        diff = _fmt_ci(d["solve_rate"][0], d["solve_rate"][1:]) if d else "-"
        tag = " (oracle)" if s["needs_ground_truth"] else ""
        lines.append(f"{name + tag:<40} {s['nfe']:>5} {_fmt_ci(s['solve_rate'], s['solve_rate_ci95']):>24} {diff:>28}")
    return lines


def _run_config(denoiser: Any, task: str, size: int, n: int, seed: int, sampling: SamplingConfig,
                methods: Sequence[Method], **extra: Any) -> dict[str, Any]:
    return {"model": getattr(denoiser, "name", type(denoiser).__name__), "task": task, "size": size, "n": n, "seed": seed,
            "sampling": to_dict(sampling), "methods": [to_dict(m) for m in methods], **extra}


def compare(denoiser: Any, task: str, size: int, n: int, seed: int, sampling: SamplingConfig, methods: Sequence[Method],
            out: str | Path, *, max_batch: int = 64, progress: bool = True, ray_address: str | None = None,
            num_workers: int | None = None, model: str | None = None) -> dict[str, Any]:
    """Evaluate `methods` on the same n held-out instances into run folder `out` (resumable; on Ray with `ray_address`).

    Returns: the summary (also in summary.json): per method solve rate + Wilson CI, NFE, and the paired
    bootstrap CI of the difference to "single" (or the first method).
    """
    from .probes.common import ProbeRun, plt

    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must be unique, got {names}")
    for m in methods:
        m.ens.check(m.sampling(sampling).steps)
    run = ProbeRun(out, "ensemble-compare", _run_config(denoiser, task, size, n, seed, sampling, methods))
    seeds = held_out_seeds(seed, n)
    results = _evaluate_methods(denoiser, run.folder, task, size, seeds, sampling, methods, max_batch=max_batch, progress=progress,
                                ray_address=ray_address, num_workers=num_workers, model=model)
    run.folder.write_jsonl("results.jsonl", [r for m in methods for r in results[m.name]])
    per = summarize_methods(results, methods, sampling)
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
    return run.finish(summary, "\n".join(text))


def sweep_methods(ks: Sequence[int] = (2, 3, 4, 8), windows: Sequence[tuple[int, int]] = ((0, 1), (0, 2), (0, 4)),
                  rules: Sequence[str] = RULES, norm_correct: Sequence[bool] = (False, True), *, after: str = "single",
                  select: str = "first") -> list[Method]:
    """"single" plus one ensemble per (K, window, rule, norm_correct); norm_correct only varies for mean_xt.

    With plain mean_xt in the sweep, also one `k{K}_single_cold` control per K (see `baselines`).
    """
    methods = [Method("single")]
    if "mean_xt" in rules and False in norm_correct:
        methods += [cold_single(k, f"k{k}_single_cold") for k in ks if k > 1]
    for rule in rules:
        for nc in sorted(set(norm_correct)) if rule == "mean_xt" else [False]:
            for w in windows:
                for k in ks:
                    ens = EnsembleConfig(k=k, window=tuple(w), rule=rule, norm_correct=nc, after=after, select=select)
                    methods.append(Method(method_name(ens), ens))
    return methods


def _point(m: Method) -> dict[str, Any]:
    """A sweep point's coordinates; a cold-start control sits at the K whose noise mean it imitates."""
    if m.noise_scale != 1.0 and m.ens.k == 1:
        return {"name": m.name, "k": round(m.noise_scale**-2), "window": None, "rule": "single_cold", "norm_correct": False}
    return {"name": m.name, "k": m.ens.k, "window": list(m.ens.window), "rule": m.ens.rule, "norm_correct": m.ens.norm_correct}


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
          num_workers: int | None = None, model: str | None = None) -> dict[str, Any]:
    """Sweep K, windows, rules and norm correction against single seed on the same instances.

    after="single" by default: with select="first" it gives the same answer as continuing all K, at
    K*M + (steps - M) instead of K*steps evaluations. Writes sweep.json, sweep.md, sweep.png,
    figures.json, summary.json and summary.txt into `out` (resumable).
    """
    from .probes.common import ProbeRun, plt

    methods = sweep_methods(ks, windows, rules, norm_correct, after=after, select=select)
    for m in methods:
        m.ens.check(sampling.steps)
    run = ProbeRun(out, "ensemble-sweep", _run_config(denoiser, task, size, n, seed, sampling, methods))
    seeds = held_out_seeds(seed, n)
    results = _evaluate_methods(denoiser, run.folder, task, size, seeds, sampling, methods, max_batch=max_batch, progress=progress,
                                ray_address=ray_address, num_workers=num_workers, model=model)
    run.folder.write_jsonl("results.jsonl", [r for m in methods for r in results[m.name]])
    per = summarize_methods(results, methods, sampling, baseline="single")
    rec = recommend(per)
    # the cold-start controls are single seeds: the best setting that really merges trajectories, apart
    controls = {m.name for m in methods if m.noise_scale != 1.0}
    rec_ens = rec if rec["name"] not in controls else recommend({k: v for k, v in per.items() if k not in controls})
    points = [_point(m) | per[m.name] for m in methods[1:]]
    write_json(run.root / "sweep.json", {"baseline": per["single"], "points": points, "recommended": rec, "recommended_ensemble": rec_ens})

    md = ["| K | window | rule | norm | NFE | solve rate [95% CI] | diff vs single [95% CI] |", "|---|---|---|---|---|---|---|"]
    s0 = per["single"]
    md.append(f"| 1 | - | single | - | {s0['nfe']} | {_fmt_ci(s0['solve_rate'], s0['solve_rate_ci95'])} | - |")
    for p in points:
        d = p["diff_vs_single"]["solve_rate"]
        star = " **" if p["name"] == rec["name"] else ""
        win = f"{p['window'][0]}:{p['window'][1]}" if p["window"] else "-"
        md.append(f"| {p['k']} | {win} | {p['rule']} | {'yes' if p['norm_correct'] else 'no'} | {p['nfe']} | "
                  f"{_fmt_ci(p['solve_rate'], p['solve_rate_ci95'])} | {_fmt_ci(d[0], d[1:])}{star} |")
    md.append(f"\nRecommended: `{rec['name']}` ({rec['reason']}).")
    if rec_ens is not rec:
        md.append(f"Best ensemble (the cold-start controls aside): `{rec_ens['name']}` ({rec_ens['reason']}).")
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
            f"single seed: {_fmt_ci(s0['solve_rate'], s0['solve_rate_ci95'])}",
            f"recommended: {rec['name']}: {rec['reason']}"]
    shown = [rec] if rec_ens is rec else [rec, rec_ens]
    for i, r in enumerate(shown):
        if i:
            text.append(f"best ensemble (cold-start controls aside): {r['name']}: {r['reason']}")
        if r.get("diff"):
            text.append(f"  solve rate {r['solve_rate']:.3f}, diff vs single {_fmt_ci(r['diff']['solve_rate'][0], r['diff']['solve_rate'][1:])}")
    return run.finish(summary, "\n".join(text))


__all__ = ["AFTER", "RULES", "SELECT", "EnsembleConfig", "EnsembleShard", "Method", "Trajectories", "agreement_distances", "baselines", "choose",
           "cold_single", "compare", "ensemble_latents", "ensemble_shard", "matched_steps", "merge", "merge_callback", "method_name", "nfe_per_instance",
           "recommend", "run_ensemble", "run_trajectories", "select_results", "spread", "step_nfe", "summarize_methods",
           "sweep", "sweep_methods", "vote_keys"]
