"""Process scores: the ground truth passes, a video that jumps to the answer fails, and `steplens score` prints both scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from steplens.cli import app
from steplens.tasks import TASKS, get_task
from steplens.tasks.audit import audit_task
from steplens.tasks.process import end_jump, process_score


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("n_frames", [4, 8])
def test_ground_truth_passes_and_end_jump_fails(name, n_frames):
    task = get_task(name)
    for seed in range(4):
        inst = task.generate(seed, None, n_frames=n_frames)
        truth = task.render(inst)
        ok = process_score(task, inst, truth)
        assert ok.success and ok.score == 1.0 and ok.details["first_violation"] is None, ok.details
        jump = end_jump(truth)
        assert task.score(inst, jump).success  # the final-state scorer cannot tell
        bad = process_score(task, inst, jump)
        assert not bad.success and bad.score < 1.0 and 1 <= bad.details["first_violation"] < n_frames and bad.details["reason"]


def test_rules_name_the_first_bad_frame():
    maze = get_task("maze")
    inst = maze.generate(3, 5, n_frames=8)
    truth = maze.render(inst)
    back = truth.copy()
    back[5] = truth[2]  # the path shrinks at frame 5
    got = process_score(maze, inst, back)
    assert got.details["first_violation"] == 5 and "disappeared" in got.details["reason"]
    rot = get_task("rotate")
    inst = rot.generate(0, None, n_frames=8)
    truth = rot.render(inst)
    turned_back = truth.copy()
    turned_back[4] = truth[2]  # turns back
    assert process_score(rot, inst, turned_back).details["first_violation"] == 4
    shuttle = get_task("shuttle")
    inst = shuttle.generate(0, 9, n_frames=8, cell_px=1)
    two = shuttle.render(inst)
    two[3][inst.start] = (0, 0, 255)  # a second agent left on the start
    got = process_score(shuttle, inst, two)
    assert got.details["first_violation"] == 3 and got.details["reason"] == "2 agents"


def test_audit_requires_the_process_to_fail_end_jump():
    report = audit_task("maze", n=3, seed=7)
    assert report.passed
    assert report.case("end_jump").success_rate == 1.0 and report.case("process:end_jump").success_rate == 0.0
    assert report.case("process:ground_truth").success_rate == 1.0


def test_score_prints_both_scores(tmp_path):
    from steplens.io import write_video
    from steplens.tasks.vbvr import generate_set

    data, videos = tmp_path / "data", tmp_path / "videos"
    paths = []
    for name in ("maze", "occlusion", "tictactoe"):
        paths += generate_set(name, 2, 0, data, progress=False)
    videos.mkdir()
    for p in paths:
        meta = json.loads((p / "meta.json").read_text())
        task = get_task(meta["task"])
        write_video(videos / f"{p.name}.mp4", end_jump(task.render(task.from_meta(meta))))
    runner = CliRunner()
    truth = runner.invoke(app, ["score", str(data), "--json"])
    jumped = runner.invoke(app, ["score", str(data), "--videos", str(videos), "--json"])
    assert truth.exit_code == 0 and jumped.exit_code == 0, jumped.output
    s_truth, s_jump = (json.loads(r.output.strip().splitlines()[-1])["summary"] for r in (truth, jumped))
    assert s_truth["success"] == 1.0 and s_truth["process_success"] == 1.0
    assert s_jump["success"] == 1.0 and s_jump["process_success"] == 0.0
    rows = [json.loads(line) for line in jumped.output.strip().splitlines()[:-1]]
    assert all(r["process"]["details"]["first_violation"] >= 1 for r in rows)
    table = runner.invoke(app, ["score", str(data), "--videos", str(videos)])
    assert "process" in table.output
