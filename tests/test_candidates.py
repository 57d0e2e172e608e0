"""Card measures that can fail: complete candidate routes, complete wrong answers, pruning, and the cards on the controls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steplens.models.controls import alternative, union_video
from steplens.probes.candidates import SCENE_GIVEN, card_measures, complete_but_different, maze_candidates, scene_given
from steplens.tasks import TASKS, get_task
from steplens.tasks.maze import floor_mask, solution_mask

BLUE = np.array([0, 0, 255], dtype=np.uint8)


def maze(seed: int = 40_000, size: int = 6):
    t = get_task("maze")
    inst = t.generate(seed, size, n_frames=4, cell_px=1)
    return t, inst, t.blocks(inst)


def test_candidates_count_complete_routes_not_blobs():
    t, inst, truth = maze()
    assert maze_candidates(inst, truth[-1]) == 1 and maze_candidates(inst, truth[0]) == 0
    alt = alternative(t, inst)
    assert maze_candidates(inst, union_video(truth, alt)[-1]) == 2
    blob = truth[-1].copy()  # an off-path floor block lit on its own, away from any lit route: not a candidate
    off = floor_mask(inst) & ~solution_mask(inst) & ~(alt[-1] == BLUE).all(-1)
    off[inst.start] = off[inst.goal] = False
    blob[tuple(np.argwhere(off)[-1])] = BLUE
    assert maze_candidates(inst, blob) == 1
    half = truth[-1].copy()  # half the true route: no complete candidate
    path = np.argwhere(solution_mask(inst))
    for p in path[: len(path) // 2]:
        half[tuple(p)] = (255, 255, 255)
    assert maze_candidates(inst, half) == 0


def test_complete_but_different_is_a_whole_wrong_answer():
    t, inst, truth = maze()
    assert complete_but_different(t, inst, alternative(t, inst)[-1])
    assert not complete_but_different(t, inst, truth[-1])  # right
    assert not complete_but_different(t, inst, truth[0])  # nothing drawn
    assert not complete_but_different(t, inst, union_video(truth, alternative(t, inst))[-1])  # two routes: a branch
    for name in ("tictactoe", "rotate", "occlusion", "shuttle", "shuttle_near"):
        task = TASKS[name]
        i = task.generate(40_000, None, n_frames=4, cell_px=1)
        assert complete_but_different(task, i, alternative(task, i)[-1]) and not complete_but_different(task, i, task.blocks(i)[-1]), name


def test_card_measures_on_hand_made_traces():
    t, inst, truth = maze()
    alt = alternative(t, inst)
    both = union_video(truth, alt)
    steps = np.stack([both, both, alt, alt, truth, truth, truth, truth])[None]  # (1, S, T, H, W, 3): the candidates control
    null = np.stack([truth] * 8)[None]
    m = card_measures(t, [inst], steps, null)
    assert m["model"]["complete_alternatives"]["rate"] == m["model"]["corrected"]["rate"] == m["model"]["pruned"]["rate"] == 1.0
    assert m["null"]["complete_alternatives"]["rate"] == m["null"]["corrected"]["rate"] == 0.0
    assert m["complete_alternatives"]["diff"] == 1.0
    assert m["perception"]["applicable"] == SCENE_GIVEN and scene_given(t, [inst])


@pytest.mark.parametrize("model, reproduced", [("null:shrink", set()), ("null:blur", set()),
                                               ("control:candidates", {"chain_of_steps", "pruning"})])
def test_quick_demo_cards_on_the_controls(tmp_path, model, reproduced):
    from steplens.demo import DemoConfig, run_demo

    # the quick sizes, but 24 samples for the cards (oracles are fast): a verdict rule that asks for n >= 24 can still decide
    s = run_demo(tmp_path, DemoConfig.make(model=model, quick=True, n_cos=24), progress=False, report=False, jobs=1)
    verdicts = {f["id"]: f["verdict"] for f in s["findings"]}
    got = {k for k, v in verdicts.items() if v == "reproduced"}
    if model.startswith("null:"):
        assert not got, verdicts  # a denoiser without the property reads nothing as reproduced
    else:
        assert got >= reproduced, verdicts
    cos = next(f for f in s["findings"] if f["id"] == "chain_of_steps")
    assert any(e["label"].startswith("null") for e in cos["extras"])  # the null beside the effect
    json.dumps(s, allow_nan=False)


def _early_plan_card(model: str, n: int = 4):
    """The Early plan card at the demo's quick size (4x4 mazes, 8 steps), the model against null:shrink on the same seeds."""
    from steplens.findings import SPECS, evaluate
    from steplens.models.registry import load
    from steplens.probes.candidates import NULL_MODEL, card_measures
    from steplens.probes.common import ProbeConfig
    from steplens.probes.cos import trace_x0
    from steplens.runner import SamplingConfig

    def trace(spec):
        return trace_x0(load(spec), ProbeConfig(model=spec, size=4, n=n, seed=40_000, sampling=SamplingConfig(steps=8), batch=n),
                        progress=False)

    m, null = trace(model), trace(NULL_MODEL)
    cards = card_measures(get_task("maze"), m.insts, m.steps, null.steps)
    return cards, next(f for f in evaluate({"cos": {"cards": cards}}, [s for s in SPECS if s.id == "early_commitment"]))


@pytest.mark.parametrize("model", ["null:noise", "null:shrink"])
def test_early_plan_does_not_read_reproduced_without_a_plan(model):
    cards, card = _early_plan_card(model)
    assert cards["model"]["early_plan"]["rate"] == 0.0 and cards["null"]["early_plan"]["rate"] == 0.0
    assert card["value"] == 0.0 and card["verdict"] != "reproduced"


def test_early_plan_reads_reproduced_on_a_control_that_commits_early():
    cards, card = _early_plan_card("control:commit?commit=0.9", n=24)  # decided at step 1 of 8, inside the first quarter
    assert cards["model"]["early_plan"]["rate"] == 1.0
    assert card["verdict"] == "reproduced"
    late = _early_plan_card("control:commit", n=4)[0]  # decided at step 4 of 8: no early plan
    assert late["model"]["early_plan"]["rate"] == 0.0
