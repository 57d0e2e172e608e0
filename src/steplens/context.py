"""Which model call is running: the sampler says (step, sigma, phase), a CFG wrapper adds the branch.

Hooks read this to key what they record or to decide whether to intervene, so the model code itself
never needs to know about steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class CallInfo:
    """The model evaluation in flight: denoising step, its sigma, CFG branch and sampler phase."""

    step: int
    sigma: float
    branch: str = "main"  # "main" without CFG; "cond" / "uncond" under CFG
    phase: str = "main"  # "main" for the evaluation a step event reports; e.g. "corrector" for Heun's second
    expert: str | None = None  # which expert answers, for mixture-of-experts models (Wan2.2 "high"/"low")


_CURRENT: ContextVar[CallInfo | None] = ContextVar("steplens_call", default=None)


def current_call() -> CallInfo | None:
    """The call in flight, or None outside a sampler (a bare forward pass)."""
    return _CURRENT.get()


@contextmanager
def model_call(step: int, sigma: float, *, phase: str = "main") -> Iterator[CallInfo]:
    info = CallInfo(step=step, sigma=float(sigma), phase=phase)
    token = _CURRENT.set(info)
    try:
        yield info
    finally:
        _CURRENT.reset(token)


@contextmanager
def branch(name: str) -> Iterator[None]:
    """Mark the CFG branch of the enclosed evaluation (keeps hooks apart per branch)."""
    cur = _CURRENT.get()
    token = _CURRENT.set(dataclasses.replace(cur, branch=name) if cur else CallInfo(-1, float("nan"), branch=name))
    try:
        yield
    finally:
        _CURRENT.reset(token)


@contextmanager
def expert(name: str | None) -> Iterator[None]:
    """Mark the expert (of a mixture-of-experts model) answering the enclosed evaluation."""
    cur = _CURRENT.get()
    token = _CURRENT.set(dataclasses.replace(cur, expert=name) if cur else CallInfo(-1, float("nan"), expert=name))
    try:
        yield
    finally:
        _CURRENT.reset(token)
