"""Intervals on proportions stay inside [0, 1]; the one helper behind every rate and score interval."""

import numpy as np
import pytest

from steplens.stats import mean_ci, proportion_ci, wilson


def test_proportion_intervals_stay_inside_0_1_where_the_normal_approximation_does_not():
    v = [1.0] * 11 + [0.0]
    assert mean_ci(v)[2] > 1.0  # the old interval: 0.92 [0.75, 1.08]
    m, lo, hi = proportion_ci(v)
    assert m == pytest.approx(11 / 12) and (lo, hi) == wilson(11, 12) and 0 <= lo < m < hi <= 1
    assert proportion_ci([1.0] * 5)[1:] == wilson(5, 5) and proportion_ci([1.0] * 5)[2] == 1.0
    assert proportion_ci([0, 0, 0])[1] == 0.0
    for n in range(1, 60):  # the ends are exact, never a rounding below 1 or above 0 (an error bar would go negative)
        assert wilson(n, n)[1] == 1.0 and wilson(0, n)[0] == 0.0


def test_scores_in_between_get_a_bootstrap_interval_inside_their_range():
    rng = np.random.default_rng(0)
    v = np.concatenate([np.ones(30), rng.uniform(0.9, 1.0, 3)])
    m, lo, hi = proportion_ci(v)
    assert lo <= m <= hi <= 1.0 and lo >= v.min()
    assert proportion_ci(v) == proportion_ci(v)  # seeded: the same interval every time
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        proportion_ci([0.5, 1.2])
    assert all(np.isnan(proportion_ci([])))


def test_evaluate_summary_intervals_are_proportions():
    from steplens.evaluate import summarize

    s = summarize([{"success": True, "score": 1.0}] * 11 + [{"success": False, "score": 0.2}])
    for key in ("solve_rate", "mean_score"):
        lo, hi = s[f"{key}_ci95"]
        assert 0 <= lo <= s[key] <= hi <= 1
