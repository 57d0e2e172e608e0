"""The `tasks generate`, `tasks audit` and `score` commands, end to end through typer."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from steplens.cli import app

runner = CliRunner()


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "D"
    r = runner.invoke(app, ["tasks", "generate", "maze", "--n", "20", "--seed", "123", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_generate_then_score_json(generated, tmp_path):
    jsonl = tmp_path / "res.jsonl"
    r = runner.invoke(app, ["score", str(generated), "--json", "--out", str(jsonl)])
    assert r.exit_code == 0, r.output
    lines = _lines(r.stdout)
    assert len(lines) == 21
    assert all(x["success"] is True and x["task"] == "maze" for x in lines[:20])
    summary = lines[-1]["summary"]
    assert summary["success"] == 1.0 and summary["n"] == 20 and summary["n_errors"] == 0
    assert _lines(jsonl.read_text()) == lines


def test_score_table(generated):
    r = runner.invoke(app, ["score", str(generated)])
    assert r.exit_code == 0, r.output
    assert "maze" in r.stdout and "1.000" in r.stdout


def test_score_with_errors_exits_1(generated, tmp_path):
    d = tmp_path / "D"
    shutil.copytree(generated, d)
    (d / "maze_00003" / "meta.json").unlink()
    r = runner.invoke(app, ["score", str(d), "--json"])
    assert r.exit_code == 1  # ran to the end; one sample could not be scored
    lines = _lines(r.stdout)
    assert lines[-1]["summary"]["n_errors"] == 1 and lines[-1]["summary"]["success"] == 1.0
    assert "meta.json: missing" in lines[3]["error"]
    assert "1 of 20 samples could not be scored" in r.output


def test_score_empty_or_missing_folder(tmp_path):
    r = runner.invoke(app, ["score", str(tmp_path)])
    assert r.exit_code == 2 and "no sample folders" in r.output
    r = runner.invoke(app, ["score", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such folder" in r.output
    r = runner.invoke(app, ["score", str(tmp_path), "--videos", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "videos folder not found" in r.output


def test_unknown_task(tmp_path):
    r = runner.invoke(app, ["tasks", "generate", "nope", "--n", "2", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown task 'nope'" in r.output and "maze" in r.output
    r = runner.invoke(app, ["tasks", "audit", "nope", "--n", "2"])
    assert r.exit_code == 2 and "unknown task 'nope'" in r.output


def test_bad_size(tmp_path):
    r = runner.invoke(app, ["tasks", "generate", "maze", "--n", "2", "--size", "50", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "size" in r.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_audit():
    r = runner.invoke(app, ["tasks", "audit", "maze", "--n", "5", "--seed", "0"])
    assert r.exit_code == 0, r.output
    head, _, *rows = r.stdout.strip().splitlines()
    assert head == "audit maze: n=5 seed=0 size=default -> PASSED"
    assert rows and all(row.endswith("yes") and " 5 " in row for row in rows)  # every case ran on all 5 instances and held


def test_audit_leakage_marks_memorisable_levels():
    """Occlusion 12's old generator (version 1) has a few dozen instances (memorisable, every evaluation seed drawn in
    training); its version 2 (the default) and maze 6x6 have far more."""
    from steplens.tasks.audit import leakage
    from steplens.tasks.occlusion import OcclusionTask

    class OcclusionV1(OcclusionTask):
        def generate(self, seed, size=None, **kw):
            return super().generate(seed, size, version=1, **kw)

    rep = leakage(OcclusionV1(), 12)
    assert rep["estimated_distinct"] <= 60 and rep["memorisable"] is True and rep["eval_in_draws"] == 1.0
    r = runner.invoke(app, ["tasks", "audit", "occlusion", "--size", "12", "--leakage", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["estimated_distinct"] >= 30_000 and rep["memorisable"] is False and rep["eval_in_draws"] == 0.0
    r = runner.invoke(app, ["tasks", "audit", "maze", "--size", "6", "--leakage", "--draws", "300", "--n", "20", "--json", "--model", "multi"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["memorisable"] is False and rep["distinct_drawn"] == 300 and rep["eval_in_seen"] == 0.0 and rep["seen_sha256"]


def test_chao1_recovers_a_known_count():
    import numpy as np

    from steplens.tasks.audit import chao1

    keys = np.random.default_rng(0).integers(0, 500, size=2000).tolist()  # 500 equally likely values
    est, s_obs, _, _ = chao1(keys)
    assert s_obs <= 500 and abs(est - 500) < 25
