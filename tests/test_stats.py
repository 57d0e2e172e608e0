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


# --- exact and small-sample methods against published worked examples ------------------------------------------------

def test_clopper_pearson_standard_values():
    from steplens.stats import clopper_pearson

    # Clopper & Pearson (1934), Biometrika 26:404, as tabulated in standard texts (e.g. Conover, Practical Nonparametric
    # Statistics, Table A4): n = 10 at 95%
    want = {0: (0.0, 0.3085), 1: (0.0025, 0.4450), 5: (0.1871, 0.8129), 10: (0.6915, 1.0)}
    for k, (lo, hi) in want.items():
        assert clopper_pearson(k, 10) == pytest.approx((lo, hi), abs=1e-4), k
    for k in range(0, 31):  # exact intervals contain Wilson's (guaranteed coverage costs width)
        cp, w = clopper_pearson(k, 30), wilson(k, 30)
        assert cp[0] <= w[0] + 1e-12 and cp[1] >= w[1] - 1e-12


def test_student_t_on_the_sleep_data():
    from steplens.stats import interval, p_value, t_diff, t_ppf, t_record

    # Student (1908), Biometrika 6:1, the Cushny-Peebles sleep data: extra hours of sleep, drug 2 minus drug 1, 10
    # patients; R's documented `t.test(extra ~ group, data = sleep, paired = TRUE)`: 95% CI 0.7001142 to 2.4598858,
    # t = 4.0621, df = 9, p = 0.002833
    drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    m, lo, hi = t_diff(drug1, drug2)
    assert m == pytest.approx(1.58) and (lo, hi) == pytest.approx((0.7001142, 2.4598858), abs=1e-6)
    assert p_value(t_record(np.subtract(drug2, drug1))) == pytest.approx(0.002833, abs=1e-6)
    # textbook t table (two-sided 95%): df 1, 4, 10, 23, 30
    assert [round(t_ppf(0.975, df), 3) for df in (1, 4, 10, 23, 30)] == [12.706, 2.776, 2.228, 2.069, 2.042]
    assert np.isnan(interval(t_record([1.0]))).all() and t_record([1.0])["sd"] is None  # n = 1: no interval, strict JSON


def test_exact_mcnemar_published_examples():
    from steplens.stats import mcnemar_exact

    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, Table 2 examples: airway hyper-responsiveness
    # before/after stem cell transplantation (Bentur et al. 2009; discordant 1 and 7): exact conditional p = 0.070;
    # complete response before/after consolidation therapy (Cavo et al. 2012; discordant 6 and 16): p = 0.052
    assert mcnemar_exact(1, 7) == pytest.approx(0.0703, abs=5e-5) == mcnemar_exact(7, 1)
    assert mcnemar_exact(6, 16) == pytest.approx(0.0525, abs=5e-5)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(2, 0) == 0.5


def test_newcombe_paired_interval_published_examples():
    from steplens.stats import newcombe_paired, paired_rate_diff

    # Newcombe (1998), Stat Med 17:2635, Table II example (a): 36 both, 12 and 2 discordant, 0 neither (n = 50):
    # method 10 gives 0.0569 to 0.3404
    assert newcombe_paired(36, 12, 2, 0) == pytest.approx((0.0569, 0.3404), abs=1e-4)
    # Altman, Machin, Bryant & Gardner (2000), Statistics with Confidence, Table 6.2 worked example (14, 5, 0, 22):
    # 0.0115 to 0.2265 (p. 52)
    assert newcombe_paired(14, 5, 0, 22) == pytest.approx((0.0115, 0.2265), abs=1e-4)
    # the same from 0/1 vectors: mean(b) - mean(a), with b the first margin
    a = [1] * 36 + [0] * 12 + [1] * 2
    b = [1] * 36 + [1] * 12 + [0] * 2
    assert paired_rate_diff(a, b) == pytest.approx((0.2, 0.0569, 0.3404), abs=1e-4)


def test_paired_rate_ci_with_two_discordant_pairs_is_at_least_as_wide_as_the_exact_one():
    from steplens.stats import beta_ppf, bootstrap_diff, paired_rate_diff

    # 50 pairs, 2 discordant (both in favour of b): the usual case here, most instances solved by both arms
    a = [1] * 40 + [0] * 2 + [0] * 8
    b = [1] * 40 + [1] * 2 + [0] * 8
    d, lo, hi = paired_rate_diff(a, b)
    # the exact conditional interval: Clopper-Pearson on the share of discordant pairs won by b, times the discordant share
    m, n = 2, 50
    exact = (m / n * (2 * beta_ppf(0.025, 2, 1) - 1), m / n)
    assert d == pytest.approx(0.04) and lo <= exact[0] and hi >= exact[1] and hi - lo >= exact[1] - exact[0]
    boot = bootstrap_diff(a, b)
    assert boot[1] >= 0.0 > lo  # the percentile bootstrap never resamples a loss: its CI excludes nothing below 0


def test_holm_adjustment_and_levels():
    from steplens.stats import holm, holm_levels

    # Holm (1979), Scand J Statist 6:65, step-down procedure; adjusted p-values as defined by Wright (1992), Biometrics
    # 48:1005, worked by hand: p = 0.01, 0.04, 0.03, 0.005 -> sorted 4 x 0.005, 3 x 0.01, 2 x 0.03, max(1 x 0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_levels([0.01, 0.04, 0.03, 0.005]) == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 1, 1 - 0.05 / 2, 1 - 0.05 / 4])
    assert holm([]) == [] and holm([0.7]) == [0.7] and holm([0.6, 0.6]) == [1.0, 1.0]


def test_estimate_records_give_intervals_at_any_level():
    from steplens.stats import binom_test, interval, needed_n, p_value, rate_record, record_value, wilson

    r = rate_record(7, 10)
    assert record_value(r) == 0.7 and interval(r) == pytest.approx(wilson(7, 10), abs=1e-4)  # z 1.959964 vs 1.96
    wide = interval(r, 0.99)
    assert wide[0] < interval(r)[0] and wide[1] > interval(r)[1]
    assert p_value(r, 0.5) == pytest.approx(binom_test(7, 10, 0.5)) == pytest.approx(0.34375)  # 2 x P(X >= 7 | 10, 1/2)
    assert p_value(rate_record(1, 10), 0.0) == 0.0 and p_value(rate_record(0, 10), 0.0) == 1.0
    assert needed_n(8, 0.2, 0.1) == 32 and needed_n(100, 0.01, 0.1) == 24 and needed_n(8, float("nan"), 0.1) is None


def test_selection_out_of_sample():
    from steplens.probes.layers import _held_out_flip, _held_out_skip
    from steplens.stats import calibration_split

    cal, held, split = calibration_split(48)
    assert split and len(cal) == len(held) == 24 and not set(cal) & set(held)
    assert not calibration_split(3)[2] and list(calibration_split(3)[1]) == [0, 1, 2]  # too few to split: in-sample, says so
    # block 1 looks indispensable on the calibration half only (chance); block 0 is the one that matters everywhere
    n = 48
    base = np.ones(n)
    recs = [{"skip": [0.0 if i % 4 else 1.0, 0.0 if i % 2 == 0 else 1.0], "outcome": ["keep", "flip" if i % 2 == 0 else "keep"]}
            for i in range(n)]
    s = _held_out_skip(recs, base, 2)
    assert s["layer"] == 1 and s["n"] == 24 and s["drop"] == 0.0 and s["ci95"][0] < 0 < s["ci95"][1]  # chosen in, gone out
    f = _held_out_flip(recs, 2)
    assert f["layer"] == 1 and f["rate"] == 0.0 and f["stats"] == {"method": "rate", "k": 0, "n": 24} and "held-out" in f["selection"]
