"""What a new user meets on the first day: each task runs at its own default size, every JSON steplens writes or
prints is strict (null, never NaN), and the test command reports its counts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli_errors import inputs  # noqa: F401 - the tiny models and samples of the first sweep
from typer.testing import CliRunner

from steplens.cli import app
from steplens.config import to_json
from steplens.evaluate import EvalConfig
from steplens.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def strict(text: str):
    """json.loads that refuses NaN and infinities, as a strict parser does."""
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


# -- 1. --size defaults to the task's own ----------------------------------------------------------
@pytest.mark.parametrize("task", ["occlusion", "tictactoe"])
def test_evaluate_runs_each_task_at_its_default_size(tmp_path, task):
    out = tmp_path / "run"
    # both default levels have room to hold out (version-2 generators, issue 37); --allow-seen keeps the test independent
    # of how much of a level a future training stage draws
    r = runner.invoke(app, ["evaluate", "--model", "multi", "--task", task, "--n", "2", "--steps", "2", "--allow-seen", "--out", str(out)])
    assert r.exit_code == 0, r.output
    size = TASKS[task].default_size
    from steplens.evaluate import evaluation_instances

    held = evaluation_instances(None, "multi", task, size, 10_000, 2, allow_seen=True)  # multi's reserved bucket first
    assert held.n_reserved == 2
    assert sorted(p.name for p in (out / "samples").glob("*.json")) == sorted(f"{task}_{size}_{s:010d}.json" for s in held.seeds)
    assert strict(r.stdout.strip().splitlines()[-1])["n_errors"] == 0


def test_a_size_out_of_range_is_refused_once_before_any_sample(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["evaluate", "--model", "multi", "--task", "occlusion", "--size", "5", "--n", "20", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == ["error: occlusion size must be in 9..16, got 5"]
    assert not out.exists()


def test_configs_take_the_task_default_and_refuse_other_sizes():
    assert EvalConfig(task="occlusion").size == TASKS["occlusion"].default_size
    assert EvalConfig(task="maze", size=7).size == 7
    with pytest.raises(ValueError, match="rotate size must be in 7..15"):
        EvalConfig(task="rotate", size=5)


def test_help_shows_each_task_default_size():
    r = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for name, t in TASKS.items():
        assert f"{name} {t.default_size}" in text, name


# -- 2. strict JSON ------------------------------------------------------------------------------
def test_to_json_writes_null_for_nan_and_infinities():
    obj = {"a": float("nan"), "b": [1.0, float("inf"), (float("-inf"),)], "c": np.array([0.5, np.nan]), "d": np.float32("nan")}
    assert strict(to_json(obj)) == {"a": None, "b": [1.0, None, [None]], "c": [0.5, None], "d": None}


def test_every_sample_failing_prints_null_rates(inputs, tmp_path):  # noqa: F811
    """The issue's case: no sample scored, so the solve rate has no value; the printed line is still JSON."""
    out = tmp_path / "run"
    r = runner.invoke(app, ["evaluate", "--model", inputs["NAN"], "--size", "3", "--n", "2", "--steps", "2", "--out", str(out)])
    assert r.exit_code == 2, r.output
    line = strict(r.stdout.strip().splitlines()[-1])
    assert line["solve_rate"] is None and line["solve_rate_ci95"] == [None, None] and line["n_errors"] == 2


def test_every_json_of_the_quick_demo_is_strict(quick_demo):
    out, code, output = quick_demo
    assert code == 0, output
    files = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    assert any(p.name == "summary.json" for p in files) and any(p.parent.name == "samples" for p in files)
    for p in files:
        lines = p.read_text().splitlines() if p.suffix == ".jsonl" else [p.read_text()]
        for line in filter(str.strip, lines):
            try:
                strict(line)
            except ValueError as e:
                raise AssertionError(f"{p.relative_to(out)}: {e}") from None
    for line in output.splitlines():  # what the demo printed as JSON
        if line.startswith("{"):
            strict(line)


# -- 3. the test command prints its counts ---------------------------------------------------------
def test_the_readme_test_command_prints_its_counts():
    """`python -m pytest -q` (the README's) still ends with "N passed": addopts must not add a second -q."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_new_user.py", "-k", "to_json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^1 passed, \d+ deselected in ", r.stdout, re.M), r.stdout
