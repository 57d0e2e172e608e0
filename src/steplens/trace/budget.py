"""Memory budgets: a capture plan's exact storage, estimated before sampling and refused when over budget.

The `Recorder` counts what it stores as well and stops a run that goes over anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import ConfigError
from ..hooks import hook_points, select_points
from .plan import DTYPES, CapturePlan
from .reducers import reduced_numel


class CaptureBudgetError(ConfigError):
    """A capture plan that would store (or has stored) more than its budget."""


def estimate_bytes(plan: CapturePlan, denoiser: Any, latent_shape: Sequence[int], batch: int, n_steps: int, *,
                   branches: int = 1, step_experts: Sequence[str | None] | None = None) -> int:
    """Bytes the plan will store, from the token grid, the model width and the captured points.

    Args:
        latent_shape: (C, F, H, W) per sample, or (B, C, F, H, W).
        n_steps: steps sampled (numbered from 0); branches: CFG branches per call (2 with guidance).
        step_experts: the expert that runs at each step (two-expert models): a point on one expert's
            blocks is counted only at that expert's steps.
    Returns:
        the exact number of bytes the `Recorder` stores for such a run.
    """
    shape = tuple(latent_shape)[-4:]
    f, h, w = denoiser.token_grid((batch, *shape))
    n, d = f * h * w, int(denoiser.hidden_dim)
    item = DTYPES[plan.dtype].itemsize
    points = hook_points(denoiser)
    total = 0
    expert_of = getattr(denoiser, "expert_of_block", None)
    for cap in plan.captures:
        steps = list(range(n_steps)) if cap.steps is None else [s for s in cap.steps if s < n_steps]
        point_steps = 0
        for pt in select_points(points, cap.selector):
            expert = None if expert_of is None or step_experts is None else expert_of(pt.layer)[0]
            point_steps += len(steps) if expert is None else sum(step_experts[s] == expert for s in steps)
        nt = n if cap.tokens is None else len(cap.tokens)
        total += point_steps * branches * batch * sum(reduced_numel(r, nt, d) for r in cap.reducers) * item
    return total


def check_budget(plan: CapturePlan, denoiser: Any, latent_shape: Sequence[int], batch: int, n_steps: int, *,
                 branches: int = 1, step_experts: Sequence[str | None] | None = None) -> int:
    """The plan's estimate in bytes; raises CaptureBudgetError (with the estimate) when over budget."""
    est = estimate_bytes(plan, denoiser, latent_shape, batch, n_steps, branches=branches, step_experts=step_experts)
    if est > plan.budget_mb * 2**20:
        raise CaptureBudgetError(
            f"capture plan {plan.spec()!r} needs about {est / 2**20:.1f} MB ({est} bytes) for {batch} samples x {n_steps} steps"
            f" x {branches} branch(es), over the {plan.budget_mb:g} MB budget: capture fewer points, steps or tokens, use"
            " norm/mean/projK reducers, or raise the budget")
    return est
