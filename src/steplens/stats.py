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
    """Mean and normal-approximation 95% interval, for unbounded quantities (use `proportion_ci` for rates and scores in [0, 1])."""
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


def bootstrap_mean(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean with a percentile-bootstrap 95% interval (resampling instances); inside [0, 1] for values in [0, 1]."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    return (float(v.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))


def fmt_ci(value: float, ci: Sequence[float]) -> str:
    """'0.800 [0.700, 0.880]': a value and its interval, three decimals."""
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def proportion_ci(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of values in [0, 1] with a 95% interval inside [0, 1]: Wilson for 0/1 outcomes, else a percentile bootstrap.

    The one helper for every rate or score interval: a normal approximation runs past 1 near 100% (0.92 [0.75, 1.08]).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"),) * 3
    if np.any((v < 0) | (v > 1)) or not np.all(np.isfinite(v)):
        raise ValueError(f"proportion_ci needs values in [0, 1], got min {v.min()} max {v.max()}")
    if np.all((v == 0) | (v == 1)):
        lo, hi = wilson(int(v.sum()), v.size)
        return (float(v.mean()), lo, hi)
    return bootstrap_mean(v, n_boot=n_boot, seed=seed)
