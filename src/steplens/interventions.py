"""Interventions through the same machinery as observation: step callbacks and hook functions.

Latent (step callbacks, see `steplens.sampling`: a returned tensor replaces the latent leaving step i):
- `NoiseAtStep(steps)`: after each chosen step, all frames are replaced by fresh Gaussian noise
  ("replace") or get `strength * sigma_next * noise` added ("add").
- `NoiseAtFrame(frames)`: after every step (or the chosen ones), the chosen latent frames likewise,
  so the model sees the corrupted frame in every step's input. The final output (after the last
  step, sigma_next = 0) is never overwritten: the model's own last update is what gets scored.
Noise is explicit: one generator per sample from `seeds`, and per step, so runs are reproducible.
Inside the transformer (hook mappings for `steplens.hooks.hooks`):
- `skip_blocks(layers, steps)`: the block becomes the identity (resid_post := resid_pre).
- `record_activations` / `patch_activations`: activation patching, run A's activations written
  into run B at chosen (step, point, tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .context import current_call
from .hooks import HookFn, hooks
from .sampling import StepEvent


def _noise(like: Tensor, seeds: Sequence[int] | None, step: int) -> Tensor:
    if seeds is None:
        raise ValueError("noise injections need explicit per-sample seeds")
    if len(seeds) != like.shape[0]:
        raise ValueError(f"need one seed per sample: {len(seeds)} seeds for a batch of {like.shape[0]}")
    out = torch.empty(like.shape, dtype=torch.float32)
    for b, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s) * 1009 + step)
        out[b] = torch.randn(like.shape[1:], generator=g)
    return out.to(like.device, like.dtype)


def _inject(x: Tensor, noise: Tensor, sigma_next: float, mode: str, strength: float) -> Tensor:
    if mode == "replace":
        return noise
    if mode == "add":
        return x + strength * sigma_next * noise
    raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")


@dataclass(frozen=True)
class NoiseAtStep:
    """Paper's "noise at step": the whole latent leaving each chosen step is corrupted."""

    steps: tuple[int, ...]
    mode: str = "replace"
    strength: float = 1.0
    seeds: tuple[int, ...] | None = None

    def __call__(self, e: StepEvent) -> Tensor | None:
        if e.step not in self.steps:
            return None
        return _inject(e.x_next, _noise(e.x_next, self.seeds, e.step), e.sigma_next, self.mode, self.strength)


@dataclass(frozen=True)
class NoiseAtFrame:
    """Paper's "noise at frame": chosen latent frames (dim 2 of (B, C, F, H, W)) corrupted after every step."""

    frames: tuple[int, ...]
    steps: tuple[int, ...] | None = None  # None: every step
    mode: str = "replace"
    strength: float = 1.0
    seeds: tuple[int, ...] | None = None

    def __call__(self, e: StepEvent) -> Tensor | None:
        if (self.steps is not None and e.step not in self.steps) or e.sigma_next <= 0:
            return None
        x = e.x_next.clone()
        n = _noise(x, self.seeds, e.step)
        idx = list(self.frames)
        x[:, :, idx] = _inject(x[:, :, idx], n[:, :, idx], e.sigma_next, self.mode, self.strength)
        return x


def _active(steps: Iterable[int] | None) -> Any:
    chosen = None if steps is None else set(steps)

    def on() -> bool:
        c = current_call()
        return chosen is None or (c is not None and c.step in chosen)

    return on


def skip_blocks(layers: Iterable[int], steps: Iterable[int] | None = None) -> dict[str, HookFn]:
    """Hook mapping that makes each chosen block the identity at the chosen steps (all when None)."""
    on = _active(steps)
    mapping: dict[str, HookFn] = {}
    for l in layers:
        stash: list[Tensor] = []

        def pre(t: Tensor, *, point, stash=stash) -> None:
            stash[:] = [t]

        def post(t: Tensor, *, point, stash=stash) -> Tensor | None:
            return stash[0] if on() and stash else None

        mapping[f"blocks.{l}.resid_pre"] = pre
        mapping[f"blocks.{l}.resid_post"] = post
    return mapping


Store = dict[tuple[int, str, str], Tensor]  # (step, point name, branch) -> activation


@contextmanager
def record_activations(denoiser: Any, points: Sequence[str], steps: Iterable[int] | None = None) -> Iterator[Store]:
    """Record full activations at `points` (main-phase evaluations, chosen steps) into a dict."""
    on = _active(steps)
    store: Store = {}

    def rec(t: Tensor, *, point) -> None:
        if point.phase == "main" and on():
            store[(point.step, point.name, point.branch)] = t.detach().clone()

    with hooks(denoiser, {p: rec for p in points}):
        yield store


def patch_activations(store: Store, points: Sequence[str], steps: Iterable[int] | None = None,
                      tokens: Sequence[int] | None = None) -> dict[str, HookFn]:
    """Hook mapping writing recorded activations into another run at (step, point, tokens)."""
    on = _active(steps)

    def patch(t: Tensor, *, point) -> Tensor | None:
        if point.phase != "main" or not on():
            return None
        src = store.get((point.step, point.name, point.branch))
        if src is None:
            return None
        if tokens is None:
            return src.to(t)
        out = t.clone()
        out[:, list(tokens)] = src[:, list(tokens)].to(t)
        return out

    return {p: patch for p in points}
