"""How latents are merged: the ensemble config, the merge rules as a step callback, and `ensemble_latents`.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import ConfigError
from ..models.protocol import Cond, eps_from_velocity, noise_to
from ..sampling import StepCallback, StepEvent, get_sampler, run

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

