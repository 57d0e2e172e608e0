"""Glue between tasks and denoisers: condition on instances, sample, decode and score.

Everything sample-level (evaluate, probes, ensemble) goes through `SampleSpec` + `generate`, so a
probe never needs to know which backend it is running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import ConfigError
from .models.protocol import Cond
from .sampling import StepCallback, flow_sigmas, run, get_sampler, seeded_noise
from .tasks import Task


@dataclass(frozen=True)
class SamplingConfig:
    """How to denoise: sampler, number of steps and Wan-style time shift."""

    sampler: str = "euler"
    steps: int = 20
    shift: float = 1.0

    def __post_init__(self) -> None:
        get_sampler(self.sampler)
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.shift <= 0:
            raise ConfigError(f"shift must be > 0, got {self.shift}")

    def sigmas(self, denoiser: Any = None) -> Tensor:
        """The schedule; a backend with its own (e.g. diffusers' scheduler grid) provides `schedule`."""
        if denoiser is not None and hasattr(denoiser, "schedule"):
            return denoiser.schedule(self.steps, self.shift)
        return flow_sigmas(self.steps, self.shift)


@dataclass
class Batch:
    """Instances that share one latent shape, with their conditioning."""

    task: Task
    instances: list[Any]
    cond: Cond
    latent_shape: tuple[int, ...]  # (C, F, H, W) per sample
    truth: Tensor  # (B, C, F, H, W) ground-truth latents


def prepare(denoiser: Any, task: Task, instances: Sequence[Any]) -> Batch:
    """Encode the instances' ground truth and first frames for `denoiser` (all must share a grid)."""
    video = getattr(denoiser, "task_video", None)  # backends with a real VAE take pixel videos
    blocks = [video(task, i) if video else task.blocks(i) for i in instances]
    shapes = {b.shape for b in blocks}
    if len(shapes) != 1:
        raise ValueError(f"a batch needs instances of one grid size and frame count, got {sorted(shapes)}")
    truth = denoiser.encode(np.stack(blocks))  # (B, C, F, H, W)
    cond = denoiser.make_cond(truth[:, :, 0], task, list(instances))
    return Batch(task, list(instances), cond, tuple(truth.shape[1:]), truth)


def generate(denoiser: Any, batch: Batch, seeds: Sequence[int], cfg: SamplingConfig,
             callback: StepCallback | Sequence[StepCallback] | None = None) -> Tensor:
    """Denoise one trajectory per instance from its seed; returns final latents (B, C, F, H, W)."""
    if len(seeds) != len(batch.instances):
        raise ValueError(f"need one seed per instance: {len(seeds)} seeds for {len(batch.instances)} instances")
    dev = denoiser.device
    x = seeded_noise(batch.latent_shape, seeds, device=dev)
    cond = _to(batch.cond, dev)
    with torch.no_grad():
        return run(get_sampler(cfg.sampler)(denoiser, x, cfg.sigmas(denoiser).to(dev), cond), callback)


def _to(cond: Cond, device: torch.device) -> Cond:
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return Cond(move(cond.image), move(cond.task_id), move(cond.text), move(cond.negative_text),
                {k: v.to(device) for k, v in cond.extra.items()})


def held_out_seeds(seed: int, n: int) -> list[int]:
    """Instance seeds for evaluation: below 2**31, a range training never draws from."""
    if not 0 <= seed < 2**31 - n:
        raise ValueError(f"evaluation seeds must lie in [0, 2**31 - n), got seed={seed}")
    return list(range(seed, seed + n))


def noise_seed(instance_seed: int, k: int = 0) -> int:
    """The noise seed for sample `instance_seed`'s k-th trajectory (decoupled from the instance seed)."""
    return (instance_seed * 1_000_003 + 7919 * (k + 1)) % (2**63 - 1)
