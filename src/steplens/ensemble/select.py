"""Selection among K continued trajectories: `first`; `agreement` (no ground truth: the trajectory whose
decoded video is closest, in mean L2, to the other K-1); `vote` (majority over the final frames snapped
to the palette, ties and the pick within the winning answer by agreement); `oracle` (best task score:
an upper bound that NEEDS GROUND TRUTH, never a method one could deploy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..tasks import Score
from .merge import SELECT


def agreement_distances(decoded: np.ndarray) -> np.ndarray:
    """(K, ...) decoded videos -> (K,) mean L2 distance of each to the other K-1 (0 for K = 1)."""
    flat = torch.as_tensor(np.asarray(decoded, dtype=np.float32).reshape(len(decoded), -1) / 255.0, dtype=torch.float64)
    if len(flat) < 2:
        return np.zeros(len(flat))
    d = torch.cdist(flat, flat)  # (K, K)
    return (d.sum(1) / (len(flat) - 1)).numpy()


def vote_keys(finals: Tensor) -> list[bytes]:
    """(K, C, F, H, W) final latents -> one hashable answer per trajectory: the palette-snapped last frame."""
    from ..models.dit import snap_to_palette

    snapped = snap_to_palette(finals[:, :, -1].float().cpu())  # (K, C, H, W)
    return [s.numpy().tobytes() for s in snapped]


def choose(select: str, finals: Tensor, decoded: np.ndarray, scores: Sequence[Score] | None = None) -> int:
    """Index of the chosen trajectory among K: finals (K, C, F, H, W), decoded (K, T, H, W, 3)."""
    k = len(finals)
    if select == "first" or k == 1:
        return 0
    if select == "oracle":
        if scores is None:
            raise ValueError("oracle selection needs ground-truth scores")
        return max(range(k), key=lambda j: (bool(scores[j].success), float(scores[j].score), -j))
    dist = agreement_distances(decoded)
    if select == "agreement":
        return int(np.argmin(dist))  # ties: lowest index
    if select == "vote":
        keys = vote_keys(finals)
        counts = {key: keys.count(key) for key in keys}
        best = max(counts.values())
        candidates = [j for j in range(k) if counts[keys[j]] == best]
        return min(candidates, key=lambda j: (dist[j], j))
    raise ValueError(f"unknown select {select!r}; choose from {list(SELECT)}")


def spread(finals: Tensor) -> float:
    """Mean pairwise RMS distance between K final latents (0 when the seeds collapsed into one)."""
    if len(finals) < 2:
        return 0.0
    flat = finals.flatten(1).double()
    d = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    k = len(flat)
    return float(d.sum() / (k * (k - 1)))

