"""Flow-matching schedules and samplers: pure functions with typed step events.

Every sampler exists once, as a generator that yields a `StepEvent` per step and accepts, through
`send`, a replacement for the latent the next step starts from. `sample(...)` drives a generator
with an optional callback (same semantics: return a tensor to replace, None to observe).

Convention: the event of step i holds the latent x_i the step started from, the model's velocity
and clean estimate at x_i, and x_next (after the update and the image-to-video re-imposition).
A replacement returned for step i replaces x_next, so "noise at step i" means: the latent leaving
step i is replaced, and steps i+1.. continue from it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .context import model_call
from .models.protocol import Cond, Denoiser, x0_from_velocity


def flow_sigmas(steps: int, shift: float = 1.0) -> Tensor:
    """`steps + 1` sigmas from 1 to 0, time-shifted as in Wan/SD3: s = shift t / (1 + (shift - 1) t)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1.0 + (shift - 1.0) * t)).to(torch.float32)


@dataclass(frozen=True)
class StepEvent:
    """What one denoising step saw and did."""

    step: int
    n_steps: int
    sigma: float
    sigma_next: float
    x: Tensor  # (B, C, F, H, W) latent at the start of the step
    velocity: Tensor  # after CFG
    x0_hat: Tensor  # clean estimate x - sigma * v (first frame re-imposed for image-to-video)
    x_next: Tensor  # latent after the update
    branches: dict[str, Tensor] | None = None  # per-CFG-branch velocity
    expert: str | None = None


StepCallback = Callable[[StepEvent], Tensor | None]
SamplerIter = Generator[StepEvent, Tensor | None, Tensor]


def _evaluate(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Cond, step: int, phase: str = "main"):
    s = sigma.to(x.device, torch.promote_types(x.dtype, torch.float32)).expand(x.shape[0])  # bf16 latents: sigma stays fp32
    with model_call(step, float(sigma), phase=phase):
        return denoiser(x, s, cond)


def _event(den: Denoiser, cond: Cond, i: int, sigmas: Tensor, x: Tensor, pred, x_next: Tensor, first_step: int) -> StepEvent:
    sigma = float(sigmas[i])
    x0_hat = den.reimpose(x0_from_velocity(x, sigma, pred.velocity), cond)  # image-to-video: frame 0 is the given image
    return StepEvent(first_step + i, first_step + len(sigmas) - 1, sigma, float(sigmas[i + 1]), x, pred.velocity,
                     x0_hat, x_next, pred.branches, pred.expert)


def iter_euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor, cond: Cond, *, first_step: int = 0) -> SamplerIter:
    """Flow-matching Euler: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v(x_i, sigma_i).

    `first_step` numbers the steps when `sigmas` is the tail of a longer schedule (resuming mid-way).
    """
    x = denoiser.reimpose(x, cond)
    for i in range(len(sigmas) - 1):
        pred = _evaluate(denoiser, x, sigmas[i], cond, first_step + i)
        x_next = denoiser.reimpose(_euler_update(denoiser, x, sigmas[i + 1] - sigmas[i], pred.velocity), cond)
        replacement = yield _event(denoiser, cond, i, sigmas, x, pred, x_next, first_step)
        x = x_next if replacement is None else denoiser.reimpose(replacement, cond)
    return x


def _euler_update(denoiser: Denoiser, x: Tensor, dt: Tensor, v: Tensor) -> Tensor:
    """x + dt v, in the arithmetic of the backend's own scheduler when it has one (`euler_step`, e.g. Wan's bf16 cast)."""
    step = getattr(denoiser, "euler_step", None)
    return x + dt * v if step is None else step(x, dt, v)


def iter_heun(denoiser: Denoiser, x: Tensor, sigmas: Tensor, cond: Cond, *, first_step: int = 0) -> SamplerIter:
    """Heun (2nd order, trapezoidal); Euler on the last step. Events report the first evaluation."""
    x = denoiser.reimpose(x, cond)
    for i in range(len(sigmas) - 1):
        pred = _evaluate(denoiser, x, sigmas[i], cond, first_step + i)
        dt = sigmas[i + 1] - sigmas[i]
        x_next = x + dt * pred.velocity
        if sigmas[i + 1] > 0:
            x_pred = denoiser.reimpose(x_next, cond)
            v2 = _evaluate(denoiser, x_pred, sigmas[i + 1], cond, first_step + i, phase="corrector").velocity
            x_next = x + dt * 0.5 * (pred.velocity + v2)
        x_next = denoiser.reimpose(x_next, cond)
        replacement = yield _event(denoiser, cond, i, sigmas, x, pred, x_next, first_step)
        x = x_next if replacement is None else denoiser.reimpose(replacement, cond)
    return x


SAMPLERS: dict[str, Callable[[Denoiser, Tensor, Tensor, Cond], SamplerIter]] = {"euler": iter_euler, "heun": iter_heun}
NFE_PER_STEP = {"euler": 1, "heun": 2}


def get_sampler(name: str) -> Callable[[Denoiser, Tensor, Tensor, Cond], SamplerIter]:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}") from None


@torch.no_grad()
def run(gen: SamplerIter, callback: StepCallback | Sequence[StepCallback] | None = None) -> Tensor:
    """Drive a sampler generator to the end; callbacks see each event and may replace x_next."""
    callbacks = [] if callback is None else ([callback] if callable(callback) else list(callback))
    try:
        event = next(gen)
        while True:
            replacement = None
            for cb in callbacks:
                out = cb(event if replacement is None else _with_next(event, replacement))
                if out is not None:
                    replacement = out
            event = gen.send(replacement)
    except StopIteration as stop:
        return stop.value


def _with_next(event: StepEvent, x_next: Tensor) -> StepEvent:
    from dataclasses import replace

    return replace(event, x_next=x_next)


def sample(denoiser: Denoiser, x: Tensor, sigmas: Tensor, cond: Cond, *, sampler: str = "euler",
           callback: StepCallback | Sequence[StepCallback] | None = None) -> Tensor:
    """Denoise `x` (pure noise at sigmas[0]) along `sigmas`; returns the final latent."""
    with torch.no_grad():
        return run(get_sampler(sampler)(denoiser, x, sigmas, cond), callback)


def seeded_noise(shape: Sequence[int], seeds: Sequence[int], *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """A batch of Gaussian noise, one explicit generator per sample: same seed, same noise, any batch."""
    shape = tuple(shape)
    out = torch.empty((len(seeds), *shape), dtype=dtype)
    for b, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s))
        out[b] = torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)
    return out.to(device)
