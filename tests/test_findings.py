"""The verdict rule and the spec table, on constructed summaries whose verdicts are known by construction."""

import math

import numpy as np

import pytest

from steplens.findings import (NOT_MEASURABLE, NOT_MEASURED, NOT_REPRODUCED, REPRODUCED, REVERSED, SPECS, FindingSpec,
                               evaluate, resolve, verdict)


@pytest.mark.parametrize("value, ci, kw, expected", [
    (0.02, [0.01, 0.03], {}, REPRODUCED),                       # CI above 0, paper predicts +
    (-0.02, [-0.03, -0.01], {}, REVERSED),                      # CI below 0
    (-0.02, [-0.03, -0.01], {"sign": -1}, REPRODUCED),          # the paper predicts a negative value
    (0.02, [0.01, 0.03], {"sign": -1}, REVERSED),
    (0.001, [-0.004, 0.004], {"min_effect": 0.005}, NOT_REPRODUCED),  # any effect is too small to matter
    (0.00765, [0.00556, 0.00903], {"min_effect": 0.01}, NOT_REPRODUCED),  # significant but negligible (issue 35's CKA)
    (-0.004, [-0.0045, -0.002], {"min_effect": 0.005}, NOT_REPRODUCED),  # negligible whatever its sign
    (0.03, [0.004, 0.06], {"min_effect": 0.05}, "inconclusive at n=40"),  # excludes 0, but the value is below the SEI
    (-0.03, [-0.06, -0.004], {"min_effect": 0.05}, "inconclusive at n=40"),
    (0.08, [0.02, 0.14], {"min_effect": 0.05}, REPRODUCED),      # excludes 0 and reaches the SEI
    (-0.08, [-0.14, -0.02], {"min_effect": 0.05}, REVERSED),
    (0.001, [-0.004, 0.006], {"min_effect": 0.005}, "inconclusive at n=40"),
    (0.001, [-0.004, 0.004], {}, "inconclusive at n=40"),       # no smallest effect: never 'not reproduced'
    (0.8, [0.7, 0.9], {"null": 0.5}, REPRODUCED),                # a rate against one half
    (0.3, [0.2, 0.4], {"null": 0.5}, REVERSED),
    (0.52, [0.46, 0.54], {"null": 0.5, "min_effect": 0.05}, NOT_REPRODUCED),
    (0.02, [0.0, 0.03], {}, "inconclusive at n=40"),             # touching 0 is not excluding it
    (None, [0.0, 1.0], {}, NOT_MEASURABLE),
    (float("nan"), [0.0, 1.0], {}, NOT_MEASURABLE),
    (0.5, None, {}, NOT_MEASURABLE),
    (0.5, [float("nan"), 1.0], {}, NOT_MEASURABLE),
    (True, [0.0, 1.0], {}, NOT_MEASURABLE),                      # a flag is not a measurement
])
def test_verdict_rule(value, ci, kw, expected):
    assert verdict(value, ci, 40, **kw) == expected


def test_no_verdict_below_24_instances():
    for n in (4, 8, 23):  # 4/4 mazes decide nothing, however far the CI lies from 0
        assert verdict(1.0, [0.4, 1.0], n, min_effect=0.05) == f"inconclusive at n={n}"
        assert verdict(0.0, [-0.001, 0.001], n, min_effect=0.05) == f"inconclusive at n={n}"
    assert verdict(1.0, [0.4, 1.0], 24, min_effect=0.05) == REPRODUCED
    assert verdict(1.0, [0.4, 1.0], None) == "inconclusive at n=?"


def test_verdict_orders_a_reversed_interval():
    assert verdict(0.02, [0.03, 0.01], 30) == REPRODUCED  # [hi, lo] is read as an interval all the same


def test_resolve_paths():
    tree = {"a": {"blocks.3.resid_post": {"diff": 1.5}, "xs": [10, 20, 30]}, "b": None}
    assert resolve(tree, "a/blocks.3.resid_post/diff") == 1.5  # dotted keys are one key
    assert resolve(tree, "a/xs/1") == 20 and resolve(tree, "a/xs/1:3") == [20, 30]
    assert resolve(tree, "b") is None
    missing = resolve(tree, "a/nope")
    assert missing is resolve(tree, "a/xs/7") is resolve(tree, "a/xs/x") is resolve(tree, "b/c") is resolve(tree, None)
    assert missing is not None


def spec(**kw):
    base = dict(id="x", title="X", claim="c", stage="s", value="s/v", ci95="s/ci", n="s/n", measure="m", figure="s/f.png")
    return FindingSpec(**(base | kw))


def test_evaluate_statuses():
    specs = [spec(id="yes"), spec(id="absent_stage", stage="other", value="other/v", ci95="other/ci", n="other/n"),
             spec(id="absent_key", value="s/nope"), spec(id="unimplemented", value=None, ci95=None, n=None),
             spec(id="null_value", value="s/null"), spec(id="not_applicable", applicable="s/why"),
             spec(id="applicable", applicable="s/ok"), spec(id="cmd", command="steplens x")]
    summary = {"s": {"v": 0.3, "ci": [0.1, 0.5], "n": 30, "null": None, "why": "copying, not memory", "ok": "measured"},
               "commands": {"s": "steplens probe s --n 30"}}
    got = {r["id"]: r for r in evaluate(summary, specs)}
    assert got["yes"]["verdict"] == REPRODUCED and got["yes"]["value"] == 0.3 and got["yes"]["ci95"] == [0.1, 0.5]
    assert got["yes"]["n"] == 30 and got["yes"]["command"] == "steplens probe s --n 30" and got["yes"]["figure"] == "s/f.png"
    for k in ("absent_stage", "absent_key", "unimplemented"):
        assert got[k]["verdict"] == NOT_MEASURED and got[k]["value"] is None, k
    assert got["null_value"]["verdict"] == NOT_MEASURABLE
    assert got["not_applicable"]["verdict"] == NOT_MEASURABLE and got["not_applicable"]["note"] == "copying, not memory"
    assert got["applicable"]["verdict"] == REPRODUCED
    assert got["cmd"]["command"] == "steplens x"


def test_evaluate_is_json_safe():
    (r,) = evaluate({"s": {"v": float("nan"), "ci": [0.0, float("inf")], "n": 3}}, [spec()])
    assert r["verdict"] == NOT_MEASURABLE and r["value"] is None and r["ci95"] == [0.0, None]


def test_specs_are_invalid_without_ci_or_n():
    with pytest.raises(ValueError, match="ci95 and n"):
        spec(ci95=None)
    with pytest.raises(ValueError, match="sign"):
        spec(sign=0)


def test_spec_table_covers_every_claim():
    ids = [s.id for s in SPECS]
    assert len(ids) == len(set(ids))
    for claim in ("chain_of_steps", "noise_step_vs_frame", "information_flow", "layer_specialisation", "patching_flip",
                  "working_memory", "self_correction", "perception_before_action", "ensemble"):
        assert claim in ids and next(s for s in SPECS if s.id == claim).source == "paper", claim
    assert {s.id for s in SPECS if s.source == "steplens"} >= {"cold_start", "early_commitment"}
    for s in SPECS:
        assert s.figure and s.figure.split("/")[0] == s.stage, s.id  # each card's figure comes from its own stage
        assert s.claim.endswith(".") and len(s.claim) < 200, s.id


def test_every_spec_on_an_empty_summary_is_not_measured():
    assert {r["verdict"] for r in evaluate({})} == {NOT_MEASURED}
    assert all(math.isfinite(r["min_effect"]) for r in evaluate({}))


def test_format_value():
    from steplens.findings import format_number, format_value

    f = {"value": 0.771, "ci95": [0.646, 0.875], "n": 48, "unit": "points"}
    assert format_value(f) == "+77.1 points [64.6, 87.5], n=48"
    assert format_value({"value": -1.4, "ci95": [-1.9, -1.0], "n": 100, "unit": "steps"}) == "-1.4 steps [-1.9, -1.0], n=100"
    assert format_value({"value": 0.21, "ci95": [0.14, 0.3], "n": 100, "unit": "%"}) == "21.0% [14.0, 30.0], n=100"
    assert format_value({"value": 0.0201, "ci95": [0.011, 0.030], "n": 40, "unit": ""}) == "0.0201 [0.011, 0.03], n=40"
    assert [format_number(x, u) for x, u in ((3, "block"), ([1, 0, 5], "blocks"), (None, ""), (4.0, "step"), (4.5, "step"))] == \
        ["3", "1, 0, 5", "none", "4", "4.5"]


def test_zero_width_rate_intervals_are_widened():
    from steplens.findings import widen

    assert widen(0.0, [0.0, 0.0], 8, "points") == [-0.375, 0.375]  # 8 agreeing pairs prove little
    assert widen(1.0, [1.0, 1.0], 4, "points") == [0.25, 1.0] and widen(1.0, [1.0, 1.0], 4, "%") == [0.25, 1.0]
    assert widen(0.0, [0.0, 0.0], 300, "points") == [-0.01, 0.01]
    assert widen(0.02, [0.02, 0.02], 8, "") == [0.02, 0.02]  # not a rate: left alone
    assert widen(0.1, [0.0, 0.2], 8, "points") == [0.0, 0.2]
    s = {"s": {"v": 0.0, "ci": [0.0, 0.0], "n": 8}, "t": {"v": 0.0, "ci": [0.0, 0.0], "n": 400}}
    few, many = evaluate(s, [spec(unit="points", min_effect=0.02),
                             spec(id="y", stage="t", value="t/v", ci95="t/ci", n="t/n", unit="points", min_effect=0.02)])
    assert few["verdict"] == "inconclusive at n=8" and few["ci95"] == [-0.375, 0.375] and "rule of three" in few["note"]
    assert many["verdict"] == NOT_REPRODUCED


def test_wilson_holds_its_point_estimate():
    from steplens.stats import wilson

    for n in range(1, 120):
        for k in range(n + 1):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)  # was (6, 6) -> hi 0.99999999 < 1: a negative error bar


def test_every_card_states_its_smallest_effect_of_interest_and_why():
    for s in SPECS:
        assert s.min_effect > 0 and len(s.min_effect_why) > 20, s.id
        # an estimate record: the family-adjusted CI is recomputed from it. The splice card is no demo stage: its
        # crossing step has a bootstrap CI over instances and is judged alone, outside the demo's Holm family
        assert s.stats or s.stage == "splice", s.id
    cka = next(s for s in SPECS if s.id == "information_flow")
    assert cka.min_effect_of and "fresh_seed" in cka.min_effect_of  # relative to the floor measured in the same run


def test_holm_across_the_cards_and_the_adjusted_ci_decides():
    from steplens.stats import interval, paired_rates_record, rate_record, t_record

    rng = np.random.default_rng(0)
    strong = t_record(rng.normal(0.05, 0.02, 48))  # p ~ 1e-20: first in the step-down, level 1 - 0.05 / 3
    weak = paired_rates_record([0] * 48, [1] * 10 + [0] * 38)  # 10 of 48 discordant pairs, all for b
    rate = rate_record(30, 48)
    summary = {"s": {"a": strong["mean"], "a_ci": list(interval(strong)), "a_stats": strong,
                     "b": 10 / 48, "b_ci": list(interval(weak)), "b_stats": weak,
                     "c": 30 / 48, "c_ci": list(interval(rate)), "c_stats": rate, "n": 48, "few": 8}}
    specs = [spec(id="a", value="s/a", ci95="s/a_ci", stats="s/a_stats", min_effect=0.01),
             spec(id="b", value="s/b", ci95="s/b_ci", stats="s/b_stats", unit="points", min_effect=0.05),
             spec(id="c", value="s/c", ci95="s/c_ci", stats="s/c_stats", unit="%", null=0.5, min_effect=0.05),
             spec(id="few", value="s/b", ci95="s/b_ci", n="s/few", stats="s/b_stats", unit="points", min_effect=0.05)]
    got = {r["id"]: r for r in evaluate(summary, specs)}
    assert got["few"]["family_size"] is None and got["few"]["ci_adjusted"] is None  # n < 24 bears no verdict
    assert got["few"]["verdict"] == "inconclusive at n=8" and got["few"]["needed_n"] >= 24
    assert {got[k]["family_size"] for k in "abc"} == {3}
    for k in "abc":
        raw, adj = got[k]["ci95"], got[k]["ci_adjusted"]
        assert adj[0] <= raw[0] and adj[1] >= raw[1] and got[k]["p_holm"] >= got[k]["p"]  # wider, never narrower
    assert got["a"]["ci_level"] == pytest.approx(1 - 0.05 / 3) and got["a"]["verdict"] == REPRODUCED
    assert got["c"]["ci_level"] == pytest.approx(0.95)  # the largest p: the last step of the step-down
    assert got["c"]["verdict"].startswith("inconclusive at n=48") and got["c"]["needed_n"] > 48
    assert got["c"]["ci_adjusted"] == pytest.approx(got["c"]["ci95"], abs=1e-4)  # at 95% the record gives the raw CI back
    # b: the raw CI excludes 0 and reaches the SEI; the verdict is read off the adjusted one all the same
    assert got["b"]["ci_level"] == pytest.approx(1 - 0.05 / 2) and got["b"]["verdict"] == REPRODUCED


def test_cka_smallest_effect_is_relative_to_the_fresh_seed_floor():
    from steplens.stats import interval, t_record

    rec = t_record(np.linspace(0.0056, 0.0092, 30))  # issue 35's numbers: 1 - CKA ~0.0077 with a floor of 0.0174
    summary = {"s": {"v": rec["mean"], "ci": list(interval(rec)), "st": rec, "n": 30, "floor": 0.0174}}
    sp = spec(value="s/v", ci95="s/ci", stats="s/st", min_effect=0.5, min_effect_of="s/floor", min_effect_why="half the floor")
    (r,) = evaluate(summary, [sp])
    assert r["min_effect"] == pytest.approx(0.0087) and "0.0174" in r["min_effect_why"]
    assert r["verdict"] == NOT_REPRODUCED  # significant, but inside half of what an unrelated seed changes
    (r,) = evaluate({"s": {**summary["s"], "floor": None}}, [sp])
    assert r["min_effect"] == 0.0 and r["verdict"] == REPRODUCED and "not measured" in r["min_effect_why"]


def _ensemble_card(single: list[float], cold: list[float] | None, n: int = 64) -> dict:
    summary = {"ensemble": {"methods": {"ensemble": {"n": n, "diff_vs_single": {"solve_rate": single}}}}}
    if cold is not None:
        summary["derived"] = {"ensemble_minus_cold": {"diff": cold[0], "ci95": cold[1:], "n": n}}
    return next(f for f in evaluate(summary, [s for s in SPECS if s.id == "ensemble"]))


def test_ensemble_needs_to_beat_both_the_single_seed_and_the_cold_start():
    both = _ensemble_card([0.2, 0.1, 0.3], [0.15, 0.05, 0.25])
    assert both["verdict"] == REPRODUCED
    assert both["requires"][0]["label"] == "ensemble minus cold start" and both["requires"][0]["verdict"] == REPRODUCED
    cold_explains = _ensemble_card([0.2, 0.1, 0.3], [0.0, -0.1, 0.1])  # the gain is the colder start's
    assert cold_explains["verdict"].startswith("inconclusive") and "cold start" in cold_explains["note"]
    assert cold_explains["requires"][0]["ci95"] == [-0.1, 0.1]  # the card shows both paired differences
    loses = _ensemble_card([0.2, 0.1, 0.3], [-0.2, -0.3, -0.1])
    assert loses["verdict"] == "reversed" and "both comparisons" in loses["note"]
    no_cold = _ensemble_card([0.2, 0.1, 0.3], None)
    assert no_cold["verdict"] == NOT_MEASURED and no_cold["requires"][0]["value"] is None
    single_fails = _ensemble_card([0.0, -0.1, 0.1], [0.15, 0.05, 0.25])
    assert single_fails["verdict"].startswith("inconclusive") and single_fails["requires"][0]["verdict"] == REPRODUCED


def test_the_ensemble_card_shows_the_cold_start_comparison(tmp_path):
    from steplens.demo import findings_lines
    from steplens.report.story import _card

    f = _ensemble_card([0.2, 0.1, 0.3], [0.0, -0.1, 0.1])
    assert "ensemble minus cold start: 0.0 points [-10.0, 10.0], n=64" in findings_lines([f])[0]
    assert "ensemble minus cold start: 0.0 points [-10.0, 10.0], n=64" in _card(f, tmp_path, lambda p: str(p))
