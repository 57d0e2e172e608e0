"""Small, dependency-free statistics: confidence intervals for rates, means and paired differences."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval for a binomial rate (well-behaved at 0% and 100%)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # at 0% and 100% the bounds equal p only up to rounding: keep p inside (a plot's error bar must not be negative)
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def mean_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and normal-approximation 95% interval."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"),) * 3
    m = float(v.mean())
    half = z * float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else float("nan")
    return (m, m - half, m + half)


def bootstrap_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Paired difference mean(b - a) with a percentile bootstrap 95% interval (resampling instances)."""
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_.shape != b_.shape or a_.size == 0:
        raise ValueError(f"paired samples must be non-empty and of equal length, got {a_.shape} and {b_.shape}")
    d = b_ - a_
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    boots = d[idx].mean(axis=1)
    return (float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
