"""Behaviour measurements against stand-in denoisers whose Chain-of-Steps is written down (answers known by construction)."""

import dataclasses
import json

import numpy as np
import pytest

from standins import ScriptedDenoiser
from steplens.probes.behaviour import analyse, revisions, run_behaviour
from steplens.probes.common import ProbeConfig
from steplens.runner import SamplingConfig
from steplens.tasks import get_task
from steplens.tasks.base import ABSENT, COMPUTABLE, IN_CONDITIONING, PALETTE
from steplens.tasks.maze import floor_mask, solution_mask

STEPS = 6


def cfg(task="maze", size=3, n=4, **kw):
    return ProbeConfig(model="standin", task=task, size=size, n=n, batch=n, sampling=SamplingConfig(steps=STEPS), **kw)


def _paint(video: np.ndarray, mask: np.ndarray, colour: str) -> np.ndarray:
    v = video.copy()
    v[:, mask] = PALETTE[colour]
    return v


def elsewhere(inst):
    """Blocks off the true path: the dead-end floor, or (a maze without dead ends) the inner walls."""
    sol, floor = solution_mask(inst), floor_mask(inst)
    dead = floor & ~sol
    dead[inst.start] = dead[inst.goal] = False
    if not dead.any():
        dead = ~floor
        dead[[0, -1]] = False
        dead[:, [0, -1]] = False
    return dead


def wrong_route(task, inst):
    """The solved video with the path moved elsewhere: one wrong answer, not containing the right one."""
    return _paint(_paint(task.blocks(inst), solution_mask(inst), "white"), elsewhere(inst), "blue")


def superimposed(task, inst):
    """The solved video plus blocks lit elsewhere: the right route among other candidates."""
    return _paint(task.blocks(inst), elsewhere(inst), "blue")


def test_revisions_on_constructed_masks():
    right = np.array([[1, 1, 0]], bool)
    wrong = np.array([[0, 0, 1]], bool)
    both = right | wrong
    ok = np.array([False, False, False, True, True])
    assert revisions(np.stack([wrong, wrong, wrong, right, right]), ok) == {"pruned": False, "corrected": True}
    assert revisions(np.stack([both, both, both, right, right]), ok) == {"pruned": True, "corrected": False}
    assert revisions(np.stack([wrong, both, right, right, right]), np.array([0, 0, 1, 1, 1], bool)) == {"pruned": True, "corrected": False}
    assert revisions(np.stack([wrong, wrong, wrong, wrong, wrong]), np.zeros(5, bool)) == {"pruned": False, "corrected": False}


def test_a_denoiser_that_commits_to_a_wrong_answer_then_switches_is_corrected_not_pruned(tmp_path):
    script = lambda task, inst, s: wrong_route(task, inst) if s < STEPS // 2 else task.blocks(inst)  # noqa: E731
    s = run_behaviour(ScriptedDenoiser(script), cfg(), str(tmp_path), progress=False)
    assert s["correction"]["rate"] == 1.0 and s["pruning"]["rate"] == 0.0
    lo, hi = s["correction"]["ci95"]
    assert 0.0 <= lo < 1.0 and hi == 1.0
    assert s["final_solve_rate"] == 1.0 and s["self_correction"]["corrected"] == 4


def test_superimposed_candidates_pruned_to_one_are_pruning_not_correction(tmp_path):
    script = lambda task, inst, s: superimposed(task, inst) if s < STEPS // 2 else task.blocks(inst)  # noqa: E731
    s = run_behaviour(ScriptedDenoiser(script), cfg(), str(tmp_path), progress=False)
    assert s["pruning"]["rate"] == 1.0 and s["correction"]["rate"] == 0.0


def test_perception_before_action_ignores_fading_candidates(tmp_path):
    """Walls drawn wrong until step 2, path missing until step 4, dead ends lit (fading candidates) until step 5:
    the scene settles at 2, the action at 4, whatever the dead ends do (they are background)."""

    def dead_ends(inst):
        dead = floor_mask(inst) & ~solution_mask(inst)
        dead[inst.start] = dead[inst.goal] = False
        return dead

    def script(task, inst, s):
        v = task.blocks(inst)
        if s < 5:
            v = _paint(v, dead_ends(inst), "blue")
        if s < 4:
            v = _paint(v, solution_mask(inst), "white")
        if s < 2:
            v = _paint(v, ~floor_mask(inst), "gray")
        return v

    c = cfg(size=4)
    task = get_task("maze")
    assert all(dead_ends(task.generate(sd, 4, n_frames=4, cell_px=1)).any() for sd in c.seeds())  # the fading candidates exist
    p = run_behaviour(ScriptedDenoiser(script), c, str(tmp_path), progress=False)["perception"]
    assert p["scene_settle_step_mean"] == 2 and p["action_settle_step_mean"] == 4
    assert p["action_minus_scene"] == 2 and p["action_minus_scene_ci95"] == [2.0, 2.0]
    assert p["verdict"] == "scene settles before the action"


TRUTH = lambda task, inst, s: task.blocks(inst)  # noqa: E731
COPY = lambda task, inst, s: np.repeat(task.blocks(inst)[:1], inst.n_frames, 0)  # noqa: E731  frame 0 held


@pytest.mark.parametrize("task_name, size, source", [("shuttle", 7, IN_CONDITIONING), ("shuttle_near", 9, IN_CONDITIONING),
                                                     ("occlusion", 9, COMPUTABLE)])
def test_memory_is_not_measurable_where_the_content_is_in_the_conditioning(tmp_path, task_name, size, source):
    """Shuttle's start is in frame 0 and occlusion's exit column is computed from frame 0: no memory number, the
    task's reason instead; what the model restored is kept as a diagnostic (ground truth 1, frame 0 held 0)."""
    c = cfg(task=task_name, size=size)
    good = run_behaviour(ScriptedDenoiser(TRUTH, tasks=(task_name,)), c, str(tmp_path / "good"), progress=False)["memory"]
    bad = run_behaviour(ScriptedDenoiser(COPY, tasks=(task_name,)), c, str(tmp_path / "bad"), progress=False)["memory"]
    rec = get_task(task_name).recall(get_task(task_name).generate(0, size))
    assert rec.source == source and not rec.measurable and rec.reason
    for m in (good, bad):
        assert m["verdict"] == f"not measurable on this task: the needed content is {source}: {rec.reason}"
        assert m["source"] == source and "memory" not in m and "memory_per_step" not in m
    assert good["restored_from_conditioning"]["restored"]["rate"] == 1.0 and good["restored_from_conditioning"]["copied"]["rate"] == 0.0
    assert bad["restored_from_conditioning"]["restored"]["rate"] == 0.0
    if task_name == "shuttle":  # the agent never leaves its start: copying
        assert bad["restored_from_conditioning"]["copied"]["rate"] == 1.0


def _absent(rec):
    return dataclasses.replace(rec, source=ABSENT, reason="synthetic: as if the start were in no conditioning frame")


def test_a_recall_absent_from_the_conditioning_is_measured(tmp_path, monkeypatch):
    """A synthetic recall declared absent from the conditioning: the rate is measured (truth 1, frame 0 held 0), and
    only on the instances that declare it (the others are excluded, not counted)."""
    from steplens.tasks.shuttle import ShuttleTask

    plain = ShuttleTask.recall
    monkeypatch.setattr(ShuttleTask, "recall", lambda self, inst: _absent(plain(self, inst)))
    c = cfg(task="shuttle", size=7)
    good = run_behaviour(ScriptedDenoiser(TRUTH, tasks=("shuttle",)), c, str(tmp_path / "good"), progress=False)["memory"]
    bad = run_behaviour(ScriptedDenoiser(COPY, tasks=("shuttle",)), c, str(tmp_path / "bad"), progress=False)["memory"]
    assert good["verdict"] == "measured" and good["source"] == ABSENT and good["n_excluded"] == 0
    assert good["memory"]["rate"] == 1.0 and good["memory"]["n"] == 4 and good["copied"]["rate"] == 0.0
    assert bad["memory"]["rate"] == 0.0 and bad["copied"]["rate"] == 1.0 and len(good["memory_per_step"]) == STEPS
    odd = {s for s in c.seeds() if s % 2}
    monkeypatch.setattr(ShuttleTask, "recall", lambda self, inst: _absent(plain(self, inst)) if inst.seed in odd else plain(self, inst))
    mixed = run_behaviour(ScriptedDenoiser(TRUTH, tasks=("shuttle",)), c, str(tmp_path / "mixed"), progress=False)["memory"]
    assert 0 < len(odd) < 4 and mixed["memory"]["n"] == len(odd) and mixed["n_excluded"] == 4 - len(odd)


def test_recall_declares_where_its_content_is():
    rec = get_task("shuttle").recall(get_task("shuttle").generate(0, 7))
    with pytest.raises(ValueError, match="source"):
        dataclasses.replace(rec, source="somewhere")
    with pytest.raises(ValueError, match="reason"):
        dataclasses.replace(rec, reason=" ")
    assert _absent(rec).measurable and _absent(rec).not_measurable() == ""


def test_the_card_reads_not_measurable_with_the_tasks_reason(monkeypatch):
    """The working-memory card on the behaviour summary: not measurable with the reason on the maze, shuttle and
    occlusion; a value on a synthetic recall absent from the conditioning."""
    from steplens.findings import NOT_MEASURABLE, SPECS, evaluate
    from steplens.tasks.shuttle import ShuttleTask

    spec = [s for s in SPECS if s.id == "working_memory"]
    for name, size in (("maze", 3), ("shuttle", 7), ("occlusion", 9)):
        task = get_task(name)
        insts = [task.generate(sd, size, n_frames=4, cell_px=1) for sd in range(3)]
        steps = np.stack([np.stack([task.blocks(i)] * 3) for i in insts])
        (card,) = evaluate({"behaviour": analyse(name, insts, steps) | {"n": 3}}, spec)
        assert card["verdict"] == NOT_MEASURABLE and card["value"] is None, name
        assert card["note"].startswith("not measurable on this task: the needed content is"), name
        assert task.recall(insts[0]).reason in card["note"], name
    plain = ShuttleTask.recall
    monkeypatch.setattr(ShuttleTask, "recall", lambda self, inst: _absent(plain(self, inst)))
    task = get_task("shuttle")
    insts = [task.generate(sd, 7, n_frames=4, cell_px=1) for sd in range(12)]
    steps = np.stack([np.stack([task.blocks(i)] * 3) for i in insts])
    (card,) = evaluate({"behaviour": analyse("shuttle", insts, steps) | {"n": 12}}, spec)
    assert card["value"] == 1.0 and card["n"] == 12 and card["verdict"] != NOT_MEASURABLE


def test_maze_marker_retention_is_called_copying(tmp_path):
    s = run_behaviour(ScriptedDenoiser(lambda task, inst, s: task.blocks(inst)), cfg(), str(tmp_path), progress=False)
    assert s["memory"]["verdict"].startswith(f"not measurable on this task: the needed content is {IN_CONDITIONING}")
    assert "copying, not memory" in s["memory"]["verdict"] and s["memory"]["markers_kept_all_steps"] == 1.0
    assert "memory" not in s["memory"]


def test_a_model_that_does_not_know_the_task_is_not_measurable(tmp_path):
    from steplens.models.dit import ReferenceDenoiser, random_tiny

    den = ReferenceDenoiser(random_tiny(seed=0))  # knows only the maze
    s = run_behaviour(den, cfg(task="shuttle", size=7), str(tmp_path), progress=False)
    assert s["memory"]["verdict"].startswith("not measurable on this model") and "'shuttle'" in s["memory"]["verdict"]
    assert s["n"] == 0 and not any(isinstance(v, float) for v in s["memory"].values())
    assert json.loads((tmp_path / "summary.json").read_text())["verdict"] == s["verdict"]


def test_an_untrained_multitask_model_runs_the_memory_diagnostic(tmp_path, one_thread):
    """A tiny model built here, trained on nothing, that declares occlusion: the probe runs and reports numbers."""
    import torch

    from steplens.models.dit import PRESETS, ReferenceDenoiser, VideoDiT

    torch.manual_seed(0)
    m = VideoDiT(PRESETS["tiny"](tasks=("maze", "occlusion", "shuttle")))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    den = ReferenceDenoiser(m.eval())
    den.n_frames = 4
    s = run_behaviour(den, cfg(task="occlusion", size=9), str(tmp_path), progress=False)
    mem = s["memory"]
    assert mem["verdict"].startswith("not measurable on this task: the needed content is computable from the conditioning")
    r = mem["restored_from_conditioning"]["restored"]
    assert 0.0 <= r["ci95"][0] <= r["rate"] <= r["ci95"][1] <= 1.0
    assert len(mem["restored_from_conditioning"]["restored_per_step"]) == STEPS
    assert (tmp_path / "perception_vs_action.png").stat().st_size > 0


def test_analyse_is_pure_over_saved_steps():
    task = get_task("maze")
    insts = [task.generate(s, 3, n_frames=4, cell_px=1) for s in (1, 2, 3)]
    steps = np.stack([np.stack([task.blocks(i)] * 4) for i in insts])  # right from the first step
    a = analyse("maze", insts, steps)
    assert a["self_correction"]["always"] == 3 and a["pruning"]["count"] == 0 and a["correction"]["count"] == 0
    assert a["perception"]["action_minus_scene"] == 0.0


def test_cli_behaviour_on_a_task_the_shipped_model_does_not_know(tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    r = CliRunner().invoke(app, ["probe", "behaviour", "--model", "maze", "--task", "shuttle", "--size", "7", "--n", "2",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "not measurable on this model" in r.output
    assert json.loads((tmp_path / "summary.json").read_text())["memory"]["verdict"].startswith("not measurable on this model")
