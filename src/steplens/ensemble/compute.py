"""Compute accounting: network evaluations (NFE) per instance, so baselines can be matched to an ensemble."""

from __future__ import annotations

from ..runner import SamplingConfig
from ..sampling import NFE_PER_STEP, get_sampler
from .merge import EnsembleConfig


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

