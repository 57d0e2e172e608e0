"""shuttle_choice: working memory of the model's own choice, absent from the conditioning, measured against chance."""

import numpy as np
import pytest

from standins import ScriptedDenoiser
from steplens.probes.behaviour import run_behaviour
from steplens.probes.common import ProbeConfig
from steplens.runner import SamplingConfig
from steplens.tasks import ABSENT, get_task
from steplens.tasks.base import PALETTE, blocks_to_frames, classify_blocks
from steplens.tasks.process import end_jump, process_score
from steplens.tasks.shuttle import AGENT, SHUTTLE_COLORS, TARGET, VISITED
from steplens.tasks.shuttle_near import steps

TASK = get_task("shuttle_choice")
STEPS = 4


def cfg(n=6):
    return ProbeConfig(model="standin", task="shuttle_choice", size=7, n=n, batch=n, sampling=SamplingConfig(steps=STEPS))


def test_targets_are_equivalent_and_the_gap_frame_has_no_trace_of_the_choice():
    for seed in range(20):
        inst = TASK.generate(seed, 7 + seed % 9)
        assert len(set(inst.targets)) == 3 and len({steps(inst.start, g) for g in inst.targets}) == 1
        assert steps(inst.start, inst.targets[0]) >= 3
        cls = np.stack([classify_blocks(f.astype(np.float32), SHUTTLE_COLORS) for f in TASK.blocks(inst)])
        gap = cls[-2]  # the agent on its start, no target drawn
        assert gap[inst.start] == SHUTTLE_COLORS.index(AGENT)
        assert all(gap[g] == SHUTTLE_COLORS.index("white") for g in inst.targets)
        assert sorted(cls[-1][g] for g in inst.targets) == sorted(
            [SHUTTLE_COLORS.index(VISITED)] + [SHUTTLE_COLORS.index(TARGET)] * 2)
        rec = TASK.recall(inst)
        assert rec.source == ABSENT and rec.measurable and rec.chance == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(6))
def test_every_choice_is_accepted_and_an_inconsistent_mark_fails_the_process(seed):
    inst = TASK.generate(seed)
    for k, g in enumerate(inst.targets):
        video = TASK.choice_blocks(inst, k)
        frames = blocks_to_frames(video, inst.cell_px)
        assert TASK.score(inst, frames).success and TASK.score(inst, frames).details["marked"] == [list(g)]
        assert process_score(TASK, inst, frames).success and TASK.recalled(inst, video) == g
    wrong = blocks_to_frames(TASK.choice_blocks(inst, 0, marked=1), inst.cell_px)  # visits one, marks another
    assert TASK.score(inst, wrong).success  # the final frame alone cannot tell
    bad = process_score(TASK, inst, wrong)
    assert not bad.success and bad.details["first_violation"] == inst.n_frames - 1 and "green" in bad.details["reason"]
    jump = end_jump(TASK.render(inst))
    assert TASK.score(inst, jump).success and not process_score(TASK, inst, jump).success
    assert TASK.recalled(inst, TASK.video_blocks(inst, jump)) is None  # never visited: commits to nothing


def test_no_gap_means_no_recall():
    """A walk whose later frames keep a trace of the choice (the targets never hidden) needs no memory: None."""
    inst = TASK.generate(3)
    video = TASK.choice_blocks(inst, 1).copy()
    for t in range(1, inst.n_frames - 1):
        for g in inst.targets:
            if not (video[t][g] == PALETTE[AGENT]).all():
                video[t][g] = PALETTE[TARGET]
    assert TASK.recalled(inst, video) is None


def _script(kind):
    def make(task, inst, s):
        if kind == "consistent":  # each instance visits its own choice (seed-dependent), marks it
            return task.choice_blocks(inst, inst.seed % 3)
        if kind == "forgets":  # visits one, marks the next one
            return task.choice_blocks(inst, inst.seed % 3, marked=(inst.seed + 1) % 3)
        return np.repeat(task.blocks(inst)[:1], inst.n_frames, 0)  # frame 0 held
    return make


def test_behaviour_measures_memory_over_chance(tmp_path):
    got = {k: run_behaviour(ScriptedDenoiser(_script(k), tasks=("shuttle_choice",)), cfg(), str(tmp_path / k),
                            progress=False)["memory"] for k in ("consistent", "forgets", "static")}
    for m in got.values():
        assert m["verdict"] == "measured" and m["source"] == ABSENT and m["n_excluded"] == 0
        assert m["over_chance"]["chance"] == pytest.approx(1 / 3) and m["over_chance"]["n"] == 6
    assert got["consistent"]["memory"]["rate"] == 1.0 and got["consistent"]["over_chance"]["diff"] == pytest.approx(2 / 3)
    assert got["forgets"]["memory"]["rate"] == 0.0 and got["static"]["memory"]["rate"] == 0.0
    assert got["forgets"]["over_chance"]["diff"] == pytest.approx(-1 / 3)


def test_the_card_reads_the_rate_over_chance(tmp_path):
    from steplens.findings import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, REVERSED, SPECS, evaluate

    spec = [s for s in SPECS if s.id == "working_memory"]
    cards = {}
    for k in ("consistent", "forgets"):
        s = run_behaviour(ScriptedDenoiser(_script(k), tasks=("shuttle_choice",)), cfg(n=24), str(tmp_path / k), progress=False)
        (cards[k],) = evaluate({"behaviour": s}, spec)
    assert cards["consistent"]["verdict"] == REPRODUCED and cards["consistent"]["n"] == 24
    assert cards["forgets"]["verdict"] in (REVERSED, NOT_REPRODUCED) and cards["forgets"]["verdict"] != NOT_MEASURABLE


def test_null_forget_is_the_memory_null_and_shrink_its_positive_control(tmp_path):
    """Through the task's solver: null:forget (every frame right, the mark on another target) reads chance minus a
    third; null:shrink (the consistent ground truth) and control:candidates measure memory 1; null:noise 0."""
    from steplens.models.controls import load_control

    got = {spec: run_behaviour(load_control(spec), cfg(n=8), str(tmp_path / spec.replace(":", "_")), progress=False)["memory"]
           for spec in ("null:forget", "null:shrink", "null:noise")}
    assert got["null:forget"]["memory"]["rate"] == 0.0 and got["null:forget"]["over_chance"]["diff"] == pytest.approx(-1 / 3)
    assert got["null:shrink"]["memory"]["rate"] == 1.0 and got["null:noise"]["memory"]["rate"] == 0.0
    inst = TASK.generate(1)
    assert TASK.score(inst, blocks_to_frames(TASK.forgetful(inst), inst.cell_px)).success  # right by the final frame
    assert get_task("maze").forgetful(get_task("maze").generate(1)) is None
