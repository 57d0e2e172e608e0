"""The task audit: every task's scorer passes it, and broken scorers or generators are caught."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steplens.tasks import TASKS, Score, get_task
from steplens.tasks.audit import AuditReport, audit_task, box_blur, format_report, jpeg, maze_violations, resize, task_violations
from steplens.tasks.maze import MazeTask, floor_mask, is_simple_path
from steplens.tasks.shuttle import ShuttleTask

PASS_CASES = ("ground_truth", "resized_2x", "resized_1.37x", "blurred_3x3", "jpeg_q60", "regenerate_identical", "meta_roundtrip")
FAIL_CASES = ("static_first_frame", "noise", "all_black", "all_white")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_passes_its_audit(name):
    report = audit_task(get_task(name), n=8, seed=100)
    assert report.passed, format_report(report)
    names = [c.name for c in report.cases]
    assert set(PASS_CASES + FAIL_CASES) <= set(names)
    violations = [c for c in report.cases if c.name.startswith("violation:")]
    assert len(violations) >= 3
    for c in report.cases:
        assert c.n <= 8 and 0.0 <= c.mean_score <= 1.0
        assert c.success_rate == (1.0 if c.expect_success else 0.0), c.name
    assert report.case("ground_truth").mean_score == 1.0


def test_audit_by_name_report_dict_and_table():
    report = audit_task("shuttle", n=3, seed=5, size=7)
    assert isinstance(report, AuditReport) and report.task == "shuttle" and report.size == 7
    d = json.loads(json.dumps(report.to_dict()))
    assert d["passed"] is True and d["n"] == 3 and {c["name"] for c in d["cases"]} >= set(PASS_CASES)
    table = format_report(report)
    assert "PASSED" in table and "violation:at_corner" in table and "resized_1.37x" in table
    with pytest.raises(KeyError):
        report.case("nope")
    with pytest.raises(ValueError):
        audit_task("shuttle", n=0)


class _AlwaysYes(ShuttleTask):
    """A scorer that accepts anything: the must-fail cases must catch it."""

    name = "always_yes"

    def score_blocks(self, inst, final, video):
        return Score(True, 1.0)


class _PixelExact(ShuttleTask):
    """A scorer that compares raw pixels: resizing, blur and JPEG must catch it."""

    name = "pixel_exact"

    def score(self, inst, frames):
        ok = frames.shape[1:] == self.render(inst).shape[1:] and np.array_equal(frames[-1], self.render(inst)[-1])
        return Score(bool(ok), float(ok))


class _Unseeded(ShuttleTask):
    """A generator that draws from unseeded randomness: the regenerate check must catch it."""

    name = "unseeded"

    def generate(self, seed, size=None, **kw):
        return super().generate(seed + int(np.random.default_rng().integers(1, 10**6)), size, **kw)


def test_audit_catches_a_scorer_that_accepts_everything():
    report = audit_task(_AlwaysYes(), n=3)
    assert not report.passed and "FAILED" in format_report(report)
    bad = {c.name for c in report.cases if not c.passed}
    assert set(FAIL_CASES) <= bad and "violation:two_agents" in bad and "ground_truth" not in bad
    assert report.case("noise").bad_seeds == (0, 1, 2)


def test_audit_catches_a_scorer_that_is_not_robust():
    report = audit_task(_PixelExact(), n=3)
    bad = {c.name for c in report.cases if not c.passed}
    assert {"resized_2x", "resized_1.37x", "blurred_3x3", "jpeg_q60"} <= bad
    assert "ground_truth" not in bad and "noise" not in bad


def test_audit_catches_a_nondeterministic_generator():
    report = audit_task(_Unseeded(), n=3)
    assert not report.case("regenerate_identical").passed and not report.passed


def test_maze_violations_break_exactly_the_intended_rule():
    task = MazeTask()
    seen_branch = 0
    for s in range(20):
        inst = task.generate(s, 4)
        bad = maze_violations(task, inst)
        assert set(bad) <= {"through_wall", "branch", "gap"} and {"through_wall", "gap"} <= set(bad)
        floor = floor_mask(inst)
        for key, video in bad.items():
            path = np.all(video[-1] == (0, 0, 255), axis=-1)
            route = path.copy()
            route[inst.start] = route[inst.goal] = True
            if key == "through_wall":  # a clean simple route, wrong only because it crosses a wall
                assert is_simple_path(route, inst.start, inst.goal) and (path & ~floor).any()
            else:  # stays on the floor, but is not one simple route
                assert not (path & ~floor).any() and not is_simple_path(route, inst.start, inst.goal)
            assert not task.score(inst, video).success
        seen_branch += "branch" in bad
    assert seen_branch >= 15
    assert task_violations(task, inst).keys() == bad.keys()


def test_corruption_helpers():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    assert resize(video, 2.0).shape == (2, 32, 48, 3) and resize(video, 1.37).shape == (2, 22, 33, 3)
    flat = np.full((1, 8, 8, 3), 77, np.uint8)
    assert np.array_equal(box_blur(flat), flat) and not np.array_equal(box_blur(video), video)
    out = jpeg(video)
    assert out.shape == video.shape and out.dtype == np.uint8 and not np.array_equal(out, video)
