"""The benchmark-style suite: mean of per-task means, stratified CIs, categories, paired differences; the CLI's suite mode."""

import json

import pytest
from typer.testing import CliRunner

from steplens.cli import app
from steplens.config import ConfigError
from steplens.suite import suite_sizes, suite_summary


def _rows(successes, scores=None, seed0=0):
    scores = scores or [float(s) for s in successes]
    return [{"seed": seed0 + i, "success": bool(s), "score": float(c)} for i, (s, c) in enumerate(zip(successes, scores))]


def test_each_task_weighs_the_same_whatever_its_n():
    rows = {"maze": {"single": _rows([1] * 40)}, "rotate": {"single": _rows([0] * 4)}}
    s = suite_summary(rows, baseline=None)
    assert s["methods"]["single"]["solve_rate"][0] == pytest.approx(0.5)  # not 40/44
    lo, hi = s["methods"]["single"]["solve_rate"][1:]
    assert lo == hi == pytest.approx(0.5)  # both tasks are constant: resampling within a task changes nothing
    assert s["tasks"]["maze"]["n"] == 40 and s["tasks"]["rotate"]["category"] == "spatial transformation"
    assert s["methods"]["single"]["categories"]["planning"]["score"][0] == pytest.approx(1.0)


def test_paired_difference_uses_shared_instances():
    single = _rows([1, 0, 0, 1, 0, 1, 0, 0])
    better = _rows([1, 1, 1, 1, 1, 1, 1, 0])
    rows = {"maze": {"single": single, "ensemble": better}, "occlusion": {"single": single, "ensemble": single[:-1]}}
    s = suite_summary(rows)
    d = s["methods"]["ensemble"]["diff_vs_single"]["solve_rate"]
    # maze: +4/8; occlusion: the 7 instances both have, no change -> mean of task differences +0.25
    assert d[0] == pytest.approx(0.25) and d[1] > 0.0 and d[1] <= d[0] <= d[2]
    assert s["tasks"]["occlusion"]["n"] == 7
    assert "diff_vs_single" not in s["methods"]["single"]


def test_suite_needs_results():
    with pytest.raises(ValueError, match="at least one task"):
        suite_summary({})
    with pytest.raises(ValueError, match="no instance has results from every method"):
        suite_summary({"maze": {"single": _rows([1]), "ensemble": _rows([1], seed0=5)}})


def test_suite_sizes():
    assert suite_sizes(("maze", "rotate"), "rotate=11") == {"maze": 5, "rotate": 11}
    with pytest.raises(ConfigError, match="over the suite's tasks"):
        suite_sizes(("maze",), "rotate=11")


def test_evaluate_suite_cli(tmp_path):
    out = tmp_path / "suite"
    r = CliRunner().invoke(app, ["evaluate", "--model", "multi", "--task", "suite", "--n", "2", "--steps", "4",
                                 "--sizes", "maze=3;occlusion=10", "--allow-seen", "--out", str(out)])
    assert r.exit_code == 0, r.output  # maze 3 was drawn whole in training: seen instances, marked
    small = json.loads((out / "maze_3" / "summary.json").read_text())
    assert small["held_out"] == "content" and small["n_seen_in_training"] == 2
    occ = json.loads((out / "occlusion_10" / "summary.json").read_text())  # occlusion's version-2 scenes: never trained on
    assert occ["held_out"] == "content" and occ["n_seen_in_training"] == 0
    refused = CliRunner().invoke(app, ["evaluate", "--model", "multi", "--task", "maze", "--size", "3", "--n", "2", "--out", str(tmp_path / "r")])
    assert refused.exit_code == 2 and "unseen in training" in refused.output
    s = json.loads((out / "summary.json").read_text())
    assert s["sizes"] == {"maze": 3, "occlusion": 10, "shuttle": 9, "rotate": 9, "tictactoe": 43, "shuttle_near": 11, "rotate_large": 11,
                          "tictactoe_fork": 43}
    assert set(s["tasks"]) == set(s["sizes"]) and all(e["n"] == 2 for e in s["tasks"].values())
    per_task = [json.loads((out / f"{t}_{z}" / "summary.json").read_text())["solve_rate"] for t, z in s["sizes"].items()]
    assert s["methods"]["single"]["solve_rate"][0] == pytest.approx(sum(per_task) / 8)  # each task's own run folder
    assert "suite score" in r.output and (out / "maze_3" / "precision.json").is_file()
    bad = CliRunner().invoke(app, ["evaluate", "--model", "maze", "--task", "maze", "--sizes", "maze=4", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--task suite only" in bad.output


@pytest.mark.parametrize("command", [["ensemble", "run", "--k", "2", "--window", "0:1", "--no-baselines"],
                                     ["search", "run", "--k", "3", "--budget", "2", "--screen-step", "1"]])
def test_ensemble_and_search_suites_compare_methods_to_single(tmp_path, command):
    out = tmp_path / "suite"
    r = CliRunner().invoke(app, [*command, "--model", "multi", "--task", "suite", "--n", "2", "--steps", "3", "--sizes",
                                 "maze=4;occlusion=10;shuttle=7;rotate=7;tictactoe=2;shuttle_near=7;rotate_large=9;tictactoe_fork=2",
                                 "--allow-seen", "--out", str(out)])  # small levels the multi model drew whole in training
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert set(s["tasks"]) == {"maze", "occlusion", "shuttle", "rotate", "tictactoe", "shuttle_near", "rotate_large", "tictactoe_fork"}
    assert "single" in s["methods"] and len(s["methods"]) >= 2
    assert all("diff_vs_single" in e for m, e in s["methods"].items() if m != "single")
    # the search's verifier needs maze rules: it is left out where a task has none, so no suite method uses it
    assert not any("verifier" in m or "route" in m for m in s["methods"])
    assert (out / "shuttle_7" / "summary.json").is_file() and "suite score" in r.output
