"""Interventions through the same machinery as observation: step callbacks and hook functions.

Latent interventions are step callbacks (`steplens.sampling`): the event of step i holds the latent
x_i the step started from and x_next, the latent leaving it; a returned tensor replaces x_next, so
an injection "at step i" is first seen by the model at step i + 1 (and the sampler re-imposes the
image-to-video first frame on it, so frame 0 cannot be corrupted there).
- `NoiseAtStep(steps)`: after each chosen step, all frames are replaced by fresh Gaussian noise
  ("replace", the paper's wording: unit noise whatever sigma the next step expects), get
  `strength * sigma_next * noise` added ("add"), or are re-noised at the sampler's level from the
  step's clean estimate ("renoise", the level-matched control: `(1 - sigma_next) x0_hat + sigma_next noise`,
  so only the noise part of the latent is new), or lose a fraction d = `strength` of their signal ("destroy",
  SNR-matched damage: with x_next = (1 - s) x0_hat + s eps, x' = (1 - s) ((1 - d) x0_hat + d noise) + s eps, so every
  damaged frame leaves the injection at SNR (1 - s)^2 (1 - d)^2 / (s^2 + (1 - s)^2 d^2) whether the damage is at a
  step or at a frame: the same fraction of signal destroyed per damaged frame and injection).
- `NoiseAtFrame(frames)`: after every step (or the chosen ones), the chosen latent frames (dim 2 of
  (B, C, F, H, W)) likewise, so the model sees the corrupted frames in every later step's input. The
  final output (after the last step, sigma_next = 0) is never overwritten: the model's own last
  update is what gets scored.
Noise is explicit: sample b of the batch draws from its own torch.Generator, seeded from `seeds[b]`
(or from `seed` and b) and the step, so runs are reproducible and independent of batch composition.

Inside the transformer (hook mappings for `steplens.hooks.hooks`):
- `skip_blocks(layers, steps)`: the block becomes the identity (resid_post := resid_pre).
- `record_activations` / `patch_activations`: activation patching, run A's activations written
  into run B at chosen (step, point, tokens). Both act on main-phase calls only (not Heun's corrector).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .context import current_call
from .hooks import HookFn, Selector, hooks
from .sampling import StepEvent

MODES = ("replace", "add", "renoise", "destroy")


def _as_tuple(v: int | Iterable[int] | None) -> tuple[int, ...] | None:
    if v is None:
        return None
    return (int(v),) if isinstance(v, int) else tuple(int(i) for i in v)


def _sample_seeds(seed: int | None, seeds: Sequence[int] | None, batch: int) -> list[int]:
    if seeds is not None:
        if len(seeds) != batch:
            raise ValueError(f"need one seed per sample: {len(seeds)} seeds for a batch of {batch}")
        return [int(s) for s in seeds]
    assert seed is not None
    return [int(seed) * 1_000_003 + b for b in range(batch)]


def injection_noise(like: Tensor, step: int, *, seed: int | None = None, seeds: Sequence[int] | None = None) -> Tensor:
    """Gaussian noise shaped like `like`; sample b from a generator seeded by (its seed, step), drawn on the CPU."""
    if seed is None and seeds is None:
        raise ValueError("noise injections need an explicit seed= or per-sample seeds=")
    out = torch.empty(like.shape, dtype=torch.float32)
    for b, s in enumerate(_sample_seeds(seed, seeds, like.shape[0])):
        g = torch.Generator().manual_seed((s * 1009 + step) % 2**63)
        out[b] = torch.randn(like.shape[1:], generator=g)
    return out.to(like.device, like.dtype)


def _inject(x: Tensor, noise: Tensor, sigma_next: float, mode: str, strength: float, x0_hat: Tensor) -> Tensor:
    if mode == "replace":
        return noise
    if mode == "renoise":  # the clean estimate kept, fresh noise at the level the next step expects
        return (1.0 - sigma_next) * x0_hat + sigma_next * noise
    if mode == "destroy":  # a fraction `strength` of the signal replaced by noise, the sampler's own noise kept
        return x + (1.0 - sigma_next) * strength * (noise - x0_hat)
    return x + strength * sigma_next * noise


def _validate(obj: Any) -> None:
    if obj.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {obj.mode!r}")
    if not math.isfinite(obj.strength):
        raise ValueError(f"strength must be finite, got {obj.strength}")
    if obj.mode == "destroy" and not 0.0 <= obj.strength <= 1.0:
        raise ValueError(f"mode destroy takes the fraction of signal destroyed as strength, in [0, 1]; got {obj.strength}")
    if (obj.seed is None) == (obj.seeds is None):
        raise ValueError("noise injections need exactly one of seed= (one int) or seeds= (one per sample)")
    object.__setattr__(obj, "steps", _as_tuple(obj.steps))
    if obj.seeds is not None:
        object.__setattr__(obj, "seeds", _as_tuple(obj.seeds))


@dataclass(frozen=True)
class NoiseAtStep:
    """Noise at a step: the whole latent leaving each chosen step is corrupted (a step callback).

    Args:
        steps: step indices i whose outgoing latent x_next is replaced; steps i+1.. continue from it.
        mode: "replace" (fresh noise), "add" (x_next + strength * sigma_next * noise), "renoise"
            ((1 - sigma_next) * x0_hat + sigma_next * noise: the step's clean estimate at the next step's level) or
            "destroy" (x_next + (1 - sigma_next) * strength * (noise - x0_hat): a fraction `strength` of the signal lost).
        seed / seeds: one int for the batch, or one seed per sample (exactly one of them).
    """

    steps: tuple[int, ...]
    mode: str = "replace"
    strength: float = 1.0
    seed: int | None = None
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _validate(self)
        if not self.steps:
            raise ValueError("NoiseAtStep needs at least one step")

    def __call__(self, e: StepEvent) -> Tensor | None:
        if e.step not in self.steps:
            return None
        noise = injection_noise(e.x_next, e.step, seed=self.seed, seeds=self.seeds)
        return _inject(e.x_next, noise, e.sigma_next, self.mode, self.strength, e.x0_hat)


@dataclass(frozen=True)
class NoiseAtFrame:
    """Noise at a frame: chosen latent frames (dim 2) corrupted after every chosen step (a step callback).

    Args:
        frames: latent frame indices (negative ones count from the end).
        steps: steps after which to inject (None: every step but the last, whose output is kept).
        mode, strength, seed / seeds: as for `NoiseAtStep`.
    """

    frames: tuple[int, ...]
    steps: tuple[int, ...] | None = None
    mode: str = "replace"
    strength: float = 1.0
    seed: int | None = None
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _validate(self)
        object.__setattr__(self, "frames", _as_tuple(self.frames))
        if not self.frames:
            raise ValueError("NoiseAtFrame needs at least one frame")

    def __call__(self, e: StepEvent) -> Tensor | None:
        if (self.steps is not None and e.step not in self.steps) or e.sigma_next <= 0:
            return None
        n_frames = e.x_next.shape[2]
        if any(not -n_frames <= f < n_frames for f in self.frames):
            raise ValueError(f"frames {self.frames} outside the latent's {n_frames} frames")
        idx = sorted({f % n_frames for f in self.frames})
        x = e.x_next.clone()
        noise = injection_noise(x, e.step, seed=self.seed, seeds=self.seeds)
        # the latent keeps its dtype (a bf16 backend's), whatever precision the clean estimate was computed in
        x[:, :, idx] = _inject(x[:, :, idx], noise[:, :, idx], e.sigma_next, self.mode, self.strength, e.x0_hat[:, :, idx]).to(x.dtype)
        return x


def _active(steps: Iterable[int] | None) -> Callable[[], bool]:
    chosen = None if steps is None else {int(s) for s in steps}

    def on() -> bool:
        if chosen is None:
            return True
        c = current_call()
        return c is not None and c.step in chosen

    return on


def skip_blocks(layers: int | Iterable[int], steps: Iterable[int] | None = None) -> dict[str, HookFn]:
    """Hook mapping that makes each chosen block the identity (resid_post := resid_pre) at the chosen steps.

    The block still runs; its output is swapped for its input, stashed by a pre-hook. Steps None: all.
    """
    on = _active(steps)
    mapping: dict[str, HookFn] = {}
    for layer in _as_tuple(layers) or ():
        stash: list[Tensor] = []

        def pre(t: Tensor, *, point: Any, stash: list[Tensor] = stash) -> None:
            stash[:] = [t]

        def post(t: Tensor, *, point: Any, stash: list[Tensor] = stash) -> Tensor | None:
            held = stash.pop() if stash else None  # never hold a step's activations past its block
            return held if held is not None and on() else None

        mapping[f"blocks.{layer}.resid_pre"] = pre
        mapping[f"blocks.{layer}.resid_post"] = post
    return mapping


Store = dict[tuple[int, str, str], Tensor]  # (step, point name, branch) -> (B, N, D) activation


@contextmanager
def record_activations(denoiser: Any, points: Selector, steps: Iterable[int] | None = None) -> Iterator[Store]:
    """Record full activations at `points` (main-phase calls at the chosen steps; None: all) into a dict.

    Returns:
        (as the context value) {(step, point name, branch): detached copy on the model's device}.
    """
    on = _active(steps)
    store: Store = {}

    def rec(t: Tensor, *, point: Any) -> None:
        if point.phase == "main" and on():
            store[(point.step, point.name, point.branch)] = t.detach().clone()

    with hooks(denoiser, [(points, rec)]):
        yield store


def patch_activations(store: Store, points: Selector, steps: Iterable[int] | None = None,
                      tokens: Sequence[int] | None = None) -> dict[Any, HookFn]:
    """Hook mapping that writes recorded activations into another run at (step, point, tokens).

    Args:
        store: from `record_activations` (run A); points: selector of the points to patch.
        steps: steps to patch (None: every step A recorded); an explicit step A lacks is an error.
        tokens: token indices to overwrite (None: all); see `steplens.hooks.frame_tokens`.
    """
    chosen = None if steps is None else {int(s) for s in steps}
    tok = None if tokens is None else torch.as_tensor(list(tokens), dtype=torch.long)

    def patch(t: Tensor, *, point: Any) -> Tensor | None:
        if point.phase != "main" or (chosen is not None and point.step not in chosen):
            return None
        src = store.get((point.step, point.name, point.branch))
        if src is None:
            if chosen is None:
                return None
            raise KeyError(f"no recorded activation at step {point.step}, {point.name}, branch {point.branch!r} to patch in")
        if src.shape != t.shape:
            raise ValueError(f"recorded {point.name} at step {point.step} has shape {tuple(src.shape)}, this run's is "
                             f"{tuple(t.shape)}: patch between runs of the same batch size and token grid")
        if tok is None:
            return src.to(t)
        out = t.clone()
        idx = tok.to(t.device)
        out[:, idx] = src[:, idx].to(t)
        return out

    return {tuple(points) if isinstance(points, list) else points: patch}
