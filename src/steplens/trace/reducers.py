"""Reducers: what a capture keeps of a (B, N, D) token stream, applied as it is recorded.

    norm    per-token L2 norm             (B, N)
    mean    mean over tokens              (B, D)
    projK   fixed random projection to K  (B, N, K)   Gaussian / sqrt(K), seeded by (plan seed, D, K):
                                                      the same matrix at every point of width D
    pcaK    per-sample PCA over tokens    (B, N, K)   exact (eigh of the smaller Gram matrix), sign-fixed
    full    the whole activation          (B, N, D)   only with explicit steps
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch
from torch import Tensor

REDUCER = re.compile(r"^(norm|mean|full|proj[1-9]\d*|pca[1-9]\d*)$")
REDUCER_DOCS = {
    "norm": "(B, N) per-token L2 norm", "mean": "(B, D) mean over tokens",
    "projK": "(B, N, K) tokens @ projection(D, K, seed): seeded Gaussian / sqrt(K), one matrix per width",
    "pcaK": "(B, N, K) per-sample PCA scores over tokens, sign fixed so each component's largest |score| is positive",
    "full": "(B, N, D) the whole activation",
}


def reducer_width(red: str) -> int:
    """K of a projK or pcaK reducer."""
    return int(red[4:] if red.startswith("proj") else red[3:])


def reduced_numel(red: str, n: int, d: int) -> int:
    """Elements one sample's reduction holds, for N tokens of width D."""
    if red == "norm":
        return n
    if red == "mean":
        return d
    if red == "full":
        return n * d
    return n * reducer_width(red)


@lru_cache(maxsize=64)
def _projection(d: int, k: int, seed: int, device: str) -> Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + d * 1009 + k) % 2**63)
    return (torch.randn(d, k, generator=g) / k**0.5).to(device)


def projection(d: int, k: int, seed: int = 0) -> Tensor:
    """(D, K) the fixed random projection `projK` uses for width D (CPU float32, a fresh copy)."""
    return _projection(d, k, seed, "cpu").clone()


def _pca(x: Tensor, k: int) -> Tensor:
    """(B, N, D) -> (B, N, K) per-sample PCA scores, through the smaller of the two Gram matrices."""
    b, n, d = x.shape
    x = x - x.mean(dim=1, keepdim=True)
    kk = min(k, n, d)
    if d <= n:
        _, vecs = torch.linalg.eigh(x.mT @ x)  # (B, D, D), eigenvalues ascending
        scores = x @ vecs[..., -kk:].flip(-1)  # (B, N, kk)
    else:
        vals, vecs = torch.linalg.eigh(x @ x.mT)  # (B, N, N): scores are U * singular values
        scores = vecs[..., -kk:].flip(-1) * vals[..., -kk:].flip(-1).clamp_min(0).sqrt()[:, None, :]
    # eigenvectors have arbitrary signs: make each component's largest |score| positive (deterministic output)
    sgn = scores.gather(1, scores.abs().argmax(dim=1, keepdim=True)).sign()
    scores = scores * torch.where(sgn == 0, torch.ones_like(sgn), sgn)
    if kk < k:  # fewer components than asked: pad, so shapes (and budgets) do not depend on the data
        scores = torch.cat([scores, scores.new_zeros(b, n, k - kk)], dim=-1)
    return scores


def reduce_tokens(t: Tensor, reducer: str, *, seed: int = 0) -> Tensor:
    """One reducer applied to (B, N, D) tokens, in float32 on their device (see the module docstring)."""
    if t.ndim != 3:
        raise ValueError(f"reducers take (B, N, D) token streams, got shape {tuple(t.shape)}")
    t = t.detach().float()
    if reducer == "norm":
        return torch.linalg.vector_norm(t, dim=-1)
    if reducer == "mean":
        return t.mean(dim=1)
    if reducer == "full":
        return t.clone()
    if not REDUCER.match(reducer):
        raise ValueError(f"unknown reducer {reducer!r}")
    if reducer.startswith("proj"):
        return t @ _projection(t.shape[-1], reducer_width(reducer), seed, str(t.device))
    return _pca(t, reducer_width(reducer))

