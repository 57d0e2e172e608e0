"""The one denoiser contract every backend implements, and the flow-matching conversions.

Latents are `(B, C, F, H, W)`: channels, latent frames, latent height and width (Wan's layout).
Flow matching: `x_t = (1 - t) x0 + t eps`, velocity `v = eps - x0`. All conversions between
velocity, noise and clean-sample predictions live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from ..precision import Precision


# -- conversions (flow matching, sigma == t) ---------------------------------------------------
def x0_from_velocity(x: Tensor, sigma: Tensor | float, v: Tensor) -> Tensor:
    return x - sigma * v


def eps_from_velocity(x: Tensor, sigma: Tensor | float, v: Tensor) -> Tensor:
    return x + (1.0 - sigma) * v


def velocity_from_x0(x: Tensor, sigma: Tensor | float, x0: Tensor) -> Tensor:
    return (x - x0) / sigma


def velocity_from_eps(x: Tensor, sigma: Tensor | float, eps: Tensor) -> Tensor:
    return (eps - x) / (1.0 - sigma)


def noise_to(x0: Tensor, eps: Tensor, sigma: Tensor | float) -> Tensor:
    """The point on the flow path at `sigma` between clean `x0` and noise `eps`."""
    return (1.0 - sigma) * x0 + sigma * eps


# -- conditioning and predictions ---------------------------------------------------------------
@dataclass(frozen=True)
class Cond:
    """What a denoiser is conditioned on. Fields a backend does not use stay None."""

    image: Tensor | None = None  # (B, C, H, W) clean first latent frame, for image-to-video
    task_id: Tensor | None = None  # (B,) long, for the reference model
    text: Tensor | None = None  # (B, L, D) prompt embeddings
    negative_text: Tensor | None = None  # (B, L, D) for classifier-free guidance
    extra: dict[str, Tensor] = field(default_factory=dict)

    def index(self, idx: Tensor | slice | list[int]) -> Cond:
        """The conditioning of a subset of the batch."""
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return replace(self, image=pick(self.image), task_id=pick(self.task_id), text=pick(self.text),
                       negative_text=pick(self.negative_text), extra={k: v[idx] for k, v in self.extra.items()})

    def repeat(self, k: int) -> Cond:
        """Each sample's conditioning repeated k times in a row (for K seeds per sample)."""
        rep = lambda t: None if t is None else t.repeat_interleave(k, dim=0)  # noqa: E731
        return replace(self, image=rep(self.image), task_id=rep(self.task_id), text=rep(self.text),
                       negative_text=rep(self.negative_text), extra={n: rep(v) for n, v in self.extra.items()})


@dataclass(frozen=True)
class Prediction:
    """A denoiser's output at one evaluation: velocity after CFG, and per branch when CFG is on."""

    velocity: Tensor  # (B, C, F, H, W)
    branches: dict[str, Tensor] | None = None
    expert: str | None = None  # which expert answered, for mixture-of-experts models (Wan2.2)


@runtime_checkable
class Denoiser(Protocol):
    """The contract. A backend adapts its model to this; samplers and probes know nothing else."""

    name: str
    latent_channels: int
    hidden_dim: int  # width of the transformer's residual stream (for capture budgets)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond) -> Prediction: ...

    def hook_blocks(self) -> Sequence[nn.Module]: ...

    def hook_sites(self) -> dict[str, str]: ...

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]: ...

    def reimpose(self, x: Tensor, cond: Cond) -> Tensor: ...

    def decode(self, latents: Tensor) -> np.ndarray: ...


class DenoiserBase:
    """Defaults for the optional parts of the contract."""

    name = "denoiser"
    latent_channels = 3
    hidden_dim = 0
    precision = Precision.FP32  # the network's compute precision (`to_precision`); samplers stay float32

    def to_precision(self, precision: Precision | str) -> DenoiserBase:
        """Run the network in `precision` (weights cast once); a backend without a bf16 path refuses it."""
        p = Precision.of(precision)
        if p is not Precision.FP32:
            raise ValueError(f"{self.name}: no {p.value} path for this backend; use --precision fp32")
        self.precision = p
        return self

    def hook_blocks(self) -> Sequence[nn.Module]:
        return []

    def hook_sites(self) -> dict[str, str]:
        """Sub-module sites per block beyond resid_pre/resid_post, e.g. {"attn_out": "attn"}."""
        return {}

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        _, _, f, h, w = latent_shape
        return int(f), int(h), int(w)

    def reimpose(self, x: Tensor, cond: Cond) -> Tensor:
        """Image-to-video: put the clean first latent frame back (no-op for text-to-video)."""
        if cond.image is None:
            return x
        x = x.clone()
        x[:, :, 0] = cond.image.to(x.dtype)
        return x

    def decode(self, latents: Tensor) -> np.ndarray:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        blocks = self.hook_blocks()
        return next(blocks[0].parameters()).device if blocks else torch.device("cpu")
