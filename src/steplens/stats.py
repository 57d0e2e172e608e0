"""Small, dependency-free statistics: confidence intervals for rates, means and paired differences."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Any

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


# --- exact and small-sample methods (no scipy: the beta and t quantiles are computed here) ------------------------

def _norm_ppf(q: float) -> float:
    return NormalDist().inv_cdf(q)


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), for x < (a + 1) / (a + b + 2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b), a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """The q-quantile of Beta(a, b), by bisection on `betainc` (monotone in x; 1e-12 in x)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=4096)
def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (0 < q < 1)."""
    if q == 0.5:
        return 0.0
    x = beta_ppf(2 * min(q, 1 - q), df / 2, 0.5)  # two-tailed probability of |T| > t is I_x(df/2, 1/2), x = df / (df + t^2)
    t = math.sqrt(df * (1 - x) / x) if x > 0 else math.inf
    return t if q > 0.5 else -t


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson exact interval for a binomial rate (guaranteed coverage; wider than Wilson)."""
    if n == 0:
        return (float("nan"), float("nan"))
    alpha = 1 - level
    lo = beta_ppf(alpha / 2, successes, n - successes + 1) if successes > 0 else 0.0
    hi = beta_ppf(1 - alpha / 2, successes + 1, n - successes) if successes < n else 1.0
    return (lo, hi)


def _binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return float(k == (0 if p <= 0.0 else n))
    return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_test(successes: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: the probability of outcomes no more likely than the observed one under p."""
    if n == 0:
        return 1.0
    observed = _binom_pmf(successes, n, p)
    return min(1.0, sum(q for q in (_binom_pmf(k, n, p) for k in range(n + 1)) if q <= observed * (1 + 1e-7)))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar test: two-sided binomial test of the b vs c discordant pairs against one half."""
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2 ** m)


def wilson_level(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """`wilson` at any confidence level."""
    return wilson(successes, n, z=_norm_ppf(1 - (1 - level) / 2))


def newcombe_paired(both: int, first_only: int, second_only: int, neither: int, level: float = 0.95) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for p1 - p2 of paired rates: Wilson intervals of the two margins, combined
    with the phi correlation (continuity-corrected as in the paper). p1 = (both + first_only) / n, p2 = (both + second_only) / n.
    """
    a, b, c, d = both, first_only, second_only, neither
    n = a + b + c + d
    if n == 0:
        return (float("nan"), float("nan"))
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_level(a + b, n, level)
    l2, u2 = wilson_level(a + c, n, level)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if den > 0:
        cross = a * d - b * c
        phi = (cross - n / 2 if cross > n / 2 else 0.0 if cross >= 0 else cross) / math.sqrt(den)
    diff = p1 - p2
    lower = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, diff - lower), min(1.0, diff + upper))


# --- estimate records: what a stage stores so that a CI at any level and a p-value can be recomputed ---------------
# {"method": "paired_rates", "table": [both, a_only, b_only, neither]}: mean(b) - mean(a), Newcombe CI, exact McNemar p
# {"method": "t", "mean": m, "sd": s, "n": n}: a mean (or a paired mean difference), Student t CI and test
# {"method": "rate", "k": k, "n": n}: a binomial rate, Wilson CI, exact binomial test against the null

def paired_rates_record(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """The paired 2x2 table of 0/1 outcomes a and b (same instances, same order)."""
    a_, b_ = np.asarray(a, dtype=np.float64) > 0.5, np.asarray(b, dtype=np.float64) > 0.5
    if a_.shape != b_.shape or a_.size == 0:
        raise ValueError(f"paired samples must be non-empty and of equal length, got {a_.shape} and {b_.shape}")
    return {"method": "paired_rates", "table": [int(np.sum(a_ & b_)), int(np.sum(a_ & ~b_)), int(np.sum(~a_ & b_)), int(np.sum(~a_ & ~b_))]}


def t_record(values: Sequence[float]) -> dict[str, Any]:
    """Mean, standard deviation (ddof 1) and n of the finite values (a paired difference: pass b - a); None where
    undefined, so that the record stays strict JSON."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return {"method": "t", "mean": float(v.mean()) if v.size else None, "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "n": int(v.size)}


def rate_record(successes: int, n: int) -> dict[str, Any]:
    return {"method": "rate", "k": int(successes), "n": int(n)}


def record_n(rec: Mapping[str, Any]) -> int:
    return int(sum(rec["table"])) if rec["method"] == "paired_rates" else int(rec["n"])


def record_value(rec: Mapping[str, Any]) -> float:
    if rec["method"] == "paired_rates":
        _, a_only, b_only, _ = rec["table"]
        return (b_only - a_only) / max(1, sum(rec["table"]))
    if rec["method"] == "rate":
        return rec["k"] / rec["n"] if rec["n"] else float("nan")
    return float("nan") if rec["mean"] is None else float(rec["mean"])


def interval(rec: Mapping[str, Any], level: float = 0.95) -> tuple[float, float]:
    """The record's CI at `level`: Newcombe (paired rates), Wilson (a rate) or Student t (a mean)."""
    if rec["method"] == "paired_rates":
        both, a_only, b_only, neither = rec["table"]
        return newcombe_paired(both, b_only, a_only, neither, level)  # p1 = rate of b, p2 = rate of a
    if rec["method"] == "rate":
        return wilson_level(rec["k"], rec["n"], level)
    n, m, sd = rec["n"], rec["mean"], rec["sd"]
    if n < 2 or sd is None or not math.isfinite(sd):
        return (float("nan"), float("nan"))
    half = t_ppf(1 - (1 - level) / 2, n - 1) * sd / math.sqrt(n)
    return (m - half, m + half)


def p_value(rec: Mapping[str, Any], null: float = 0.0) -> float:
    """Two-sided p of no effect: exact McNemar (paired rates), exact binomial (a rate vs `null`), Student t (a mean)."""
    if rec["method"] == "paired_rates":
        _, a_only, b_only, _ = rec["table"]
        return mcnemar_exact(a_only, b_only)
    if rec["method"] == "rate":
        return binom_test(rec["k"], rec["n"], null)
    n, m, sd = rec["n"], rec["mean"], rec["sd"]
    if n < 2 or sd is None or not math.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 1.0 if m == null else 0.0
    t = (m - null) / (sd / math.sqrt(n))
    return min(1.0, 2 * t_cdf(-abs(t), n - 1))


def needed_n(n: int, half_width: float, target: float, *, floor: int = 24) -> int | None:
    """Instances for a CI half-width of `target`, from one of `half_width` at n (half-widths scale as 1/sqrt(n))."""
    if not (n > 0 and math.isfinite(half_width) and target > 0):
        return None
    return max(floor, math.ceil(n * (half_width / target) ** 2))


def paired_rate_diff(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Paired difference of 0/1 rates mean(b) - mean(a) with Newcombe's interval (the drop-in for `bootstrap_diff` on rates)."""
    return paired_diff(a, b, rates=True, level=level)[:3]


def t_diff(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Paired difference mean(b - a) with a Student t interval."""
    return paired_diff(a, b, rates=False, level=level)[:3]


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean with a Student t interval (small-n safe, unlike `mean_ci`'s normal quantile)."""
    rec = t_record(values)
    return (record_value(rec), *interval(rec, level))


# --- a family of tests ----------------------------------------------------------------------------------------------

def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values (family-wise error control), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def holm_levels(pvalues: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Confidence level per hypothesis at Holm's step-down thresholds: 1 - alpha / (m - r + 1) for the r-th smallest p."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    for rank, i in enumerate(order):
        out[i] = 1 - alpha / (m - rank)
    return out


def paired_diff(a: Sequence[float], b: Sequence[float], *, rates: bool, level: float = 0.95) -> tuple[float, float, float, dict[str, Any]]:
    """mean(b - a), its CI and its estimate record: Newcombe and exact McNemar for 0/1 outcomes (rates=True), else
    Student t on the paired differences. The one call behind every paired card."""
    if rates:
        rec = paired_rates_record(a, b)
    else:
        a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a_.shape != b_.shape or a_.size == 0:
            raise ValueError(f"paired samples must be non-empty and of equal length, got {a_.shape} and {b_.shape}")
        rec = t_record(b_ - a_)
    return (record_value(rec), *interval(rec, level), rec)


def calibration_split(n: int, *, min_n: int = 4) -> tuple[np.ndarray, np.ndarray, bool]:
    """(calibration, held-out, split): alternate samples (even, odd positions), so that a choice among several settings
    made on one half is reported on instances it never saw; below `min_n` both are every sample and split is False."""
    idx = np.arange(n)
    if n < min_n:
        return idx, idx, False
    return idx[0::2], idx[1::2], True
