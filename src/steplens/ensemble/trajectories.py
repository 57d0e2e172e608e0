"""Running an ensemble on task instances: K trajectories per instance, decoded, scored, then selected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from ..runner import SamplingConfig, noise_seed, prepare
from ..sampling import seeded_noise
from ..tasks import Score, get_task
from .compute import nfe_per_instance
from .merge import EnsembleConfig, ensemble_latents
from .select import choose, spread


@dataclass
class Trajectories:
    """What K trajectories per instance produced (before selection)."""

    seeds: list[int]
    finals: Tensor  # (B, K', C, F, H, W), K' = K or 1
    decoded: np.ndarray  # (B, K', T, H, W, 3) uint8
    scores: list[list[Score]]  # B x K'
    nfe: int


def run_trajectories(denoiser: Any, task_name: str, size: int, seeds: Sequence[int], sampling: SamplingConfig,
                     ens: EnsembleConfig, *, noise_scale: float = 1.0) -> Trajectories:
    """Generate the instances of `seeds`, sample K trajectories each (noise_seed(seed, j)), decode and score all.

    `noise_scale` multiplies the initial noise (1: the model's prior; < 1: a colder start).
    """
    task = get_task(task_name)
    n_frames = getattr(denoiser, "n_frames", 4)
    insts = [task.generate(int(s), size, n_frames=n_frames, cell_px=1) for s in seeds]
    batch = prepare(denoiser, task, insts)
    dev = denoiser.device
    x = seeded_noise(batch.latent_shape, [noise_seed(int(s), j) for s in seeds for j in range(ens.k)], device=dev)
    if noise_scale != 1.0:
        x = x * noise_scale
    cond = batch.cond.repeat(ens.k)
    lat = ensemble_latents(denoiser, x, sampling.sigmas(denoiser).to(dev), cond, ens, sampler=sampling.sampler)
    b = len(insts)
    finals = lat.reshape(b, -1, *lat.shape[1:])  # (B, K', C, F, H, W)
    decoded = denoiser.decode(lat)
    decoded = decoded.reshape(b, finals.shape[1], *decoded.shape[1:])
    scores = [[task.score(inst, v) for v in vids] for inst, vids in zip(insts, decoded)]
    return Trajectories([int(s) for s in seeds], finals, decoded, scores, nfe_per_instance(ens, sampling))


def select_results(traj: Trajectories, select: str) -> list[dict[str, Any]]:
    """Per-instance result dicts for one selection rule over already sampled trajectories."""
    out = []
    for i, seed in enumerate(traj.seeds):
        scores = traj.scores[i]
        j = choose(select, traj.finals[i], traj.decoded[i], scores)
        r: dict[str, Any] = {"seed": seed, "success": bool(scores[j].success), "score": float(scores[j].score),
                             "chosen": j, "nfe": traj.nfe, "details": scores[j].details}
        if len(scores) > 1:
            r["traj_success"] = [bool(s.success) for s in scores]
            r["traj_score"] = [float(s.score) for s in scores]
            r["spread"] = spread(traj.finals[i])
        out.append(r)
    return out


def run_ensemble(denoiser: Any, task_name: str, size: int, seeds: Sequence[int], sampling: SamplingConfig,
                 ens: EnsembleConfig) -> list[dict[str, Any]]:
    """Ensemble-sample the instances of `seeds` (one batch) and return one result dict per instance.

    Args: seeds are instance seeds; trajectory j of instance s starts from noise_seed(s, j).
    Returns: dicts with success, score, chosen (trajectory index), nfe, and per-trajectory
    traj_success / traj_score / spread when more than one trajectory was continued.
    """
    ens.check(sampling.steps)
    return select_results(run_trajectories(denoiser, task_name, size, seeds, sampling, ens), ens.select)
