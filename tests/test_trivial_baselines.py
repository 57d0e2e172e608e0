"""The trivial videos that run beside every model on the official layout: static (first frame held) and end-jump
(first frame, then the true final frame). On steplens' own tasks, scored by steplens: the null and the answer key."""

from __future__ import annotations

import numpy as np
import pytest

from steplens.config import ConfigError
from steplens.io import read_png, read_video
from steplens.tasks import TASKS
from steplens.tasks.vbvr import generate_set, iter_bench
from steplens.vbvr.baselines import trivial_generator, trivial_video, write_trivial
from steplens.vbvr.kit import SteplensScorer

# static's score is 0 where the score counts only what the solution changes; on these five the score is an IoU over
# blocks that a still video already gets partly right (shuttle: the agent is back where it started; shuttle_near,
# shuttle_choice: the same, with three targets; rotate, rotate_large: a piece can overlap its rotated self): it still
# never solves them
STATIC_PARTIAL = {"shuttle", "shuttle_near", "shuttle_choice", "rotate", "rotate_large"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("own") / "GT"
    for task in TASKS:
        generate_set(task, 3, 5, root, progress=False, layout="vbvr")
    refs = iter_bench(root)
    out = root.parent / "OUT"
    write_trivial(refs, out)
    return {name: SteplensScorer().score(root, out / name, refs, root.parent / "w") for name in ("static", "end-jump")}, refs


def test_static_scores_0_and_end_jump_1_on_steplens_tasks(scored):
    rows, refs = scored
    assert {r.steplens_task for r in refs} == set(TASKS)
    for r in rows["static"]:
        assert r.status == "scored" and r.details["success"] is False, r  # a still video solves no task
        if r.task.removeprefix("steplens-") not in STATIC_PARTIAL:
            assert r.score == 0.0, r
    for r in rows["end-jump"]:  # the true final frame is the answer: it solves every task (it knows it)
        assert r.status == "scored" and r.score == 1.0 and r.details["success"] is True, r


def test_trivial_videos_are_what_they_say(scored):
    _, refs = scored
    ref = refs[0]
    first, truth = read_png(ref.path / "first_frame.png"), read_video(ref.path / "ground_truth.mp4")
    static = trivial_video("static", ref.path, 4, *first.shape[:2])
    jump = trivial_video("end-jump", ref.path, 4, *first.shape[:2])
    assert static.shape == (4, *first.shape) and all(np.array_equal(f, first) for f in static)
    assert np.array_equal(jump[0], first) and all(np.array_equal(f, read_png(ref.path / "final_frame.png")) for f in jump[1:])
    assert not np.array_equal(jump[-1], first) and len(truth) > 1
    with pytest.raises(ConfigError, match="unknown trivial method 'copy'"):
        trivial_generator("copy")
