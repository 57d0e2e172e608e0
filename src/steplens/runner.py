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


@dataclass(frozen=True)
class HeldOut:
    """Evaluation instances chosen by content: their seeds, which of them training drew, and what the walk skipped."""

    seeds: tuple[int, ...]
    seen: tuple[bool, ...]  # True only with allow_seen, when too few unseen instances were found
    n_skipped_seen: int
    n_skipped_duplicate: int
    seen_sha256: str | None
    reserve: int = 0  # the model's reserved bucket (key % reserve == 0 never drawn in training); 0: none
    n_reserved: int = 0  # how many of `seeds` (the first ones) lie in it

    def to_dict(self) -> dict[str, Any]:
        """The summary fields every evaluation reports."""
        out = {"held_out": "content", "n_skipped_seen": self.n_skipped_seen, "n_skipped_duplicate": self.n_skipped_duplicate,
               "n_seen_in_training": sum(self.seen), "seen_set_sha256": self.seen_sha256}
        if self.reserve:
            out |= {"reserved_bucket": f"key % {self.reserve} == 0", "n_reserved": self.n_reserved}
        return out


def held_out_instances(task: Task, size: int | None, seed: int, n: int, *, n_frames: int, seen: Any = None,
                       allow_seen: bool = False, max_walk: int | None = None) -> HeldOut:
    """`n` distinct instances held out by content: walk seeds from `seed`, skip any in `seen` (`steplens.seen.SeenSet`) or already taken.

    Deterministic given the seen-set. When fewer than `n` unseen instances turn up within `max_walk` seeds (default
    max(20 n, 2000)), raise ConfigError, or with `allow_seen` fill up with distinct seen instances (marked in `seen`).
    A seen-set with a reserved bucket (`seen.reserve` = m > 0: the model's training never drew an instance whose key
    is 0 mod m) makes the bucket the first choice: the walk goes on (up to 3 m n seeds more) until n unseen instances
    of the bucket turn up, and fills up with the other unseen ones, in walk order, where the bucket has too few.
    """
    if not 0 <= seed < 2**31 - n:
        raise ValueError(f"evaluation seeds must lie in [0, 2**31 - n), got seed={seed}")
    m = int(getattr(seen, "reserve", 0) or 0)
    walk = max(20 * n, 2000) if max_walk is None else max_walk
    walk += 3 * m * n
    taken: set[int] = set()
    unseen: list[int] = []  # outside the reserved bucket (every unseen instance without one)
    bucket: list[int] = []  # unseen instances of the reserved bucket
    spare: list[int] = []  # distinct seen instances, in walk order
    n_seen = n_dup = 0
    target = bucket if m else unseen
    for s in range(seed, min(seed + walk, 2**31)):
        try:
            k = task.key(task.generate(s, size, n_frames=n_frames, cell_px=1))
        except Exception:  # noqa: BLE001 - kept: the evaluation records its error as a sample's (and retries it on re-run)
            unseen.append(s)
            if len(target) == n:
                break
            continue
        if k in taken:
            n_dup += 1
        elif seen is not None and k in seen:
            n_seen += 1
            spare.append(s)
        elif m and k % m == 0:
            bucket.append(s)
        else:
            unseen.append(s)
        taken.add(k)
        if len(target) == n:
            break
    sha = None if seen is None else seen.sha256
    chosen = (bucket + unseen)[:n]
    if len(chosen) < n and not (allow_seen and len(chosen) + len(spare) >= n):
        level = f"{task.name} size {size if size is not None else task.default_size}"
        raise ConfigError(f"{level} has only {len(chosen)} instances unseen in training (and {len(spare)} seen) in {walk} seeds from {seed}; "
                          f"asked n={n}: ask fewer, a larger level, or --allow-seen to fill up with instances seen in training")
    fill = spare[: n - len(chosen)]
    return HeldOut(tuple(chosen + fill), (False,) * len(chosen) + (True,) * len(fill), n_seen - len(fill), n_dup, sha,
                   reserve=m, n_reserved=min(len(bucket), n))


def noise_seed(instance_seed: int, k: int = 0) -> int:
    """The noise seed for sample `instance_seed`'s k-th trajectory (decoupled from the instance seed)."""
    return (instance_seed * 1_000_003 + 7919 * (k + 1)) % (2**63 - 1)
