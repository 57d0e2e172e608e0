"""Braided mazes (`maze_braid`): loops, several valid routes, the unique shortest one is the answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steplens.cli import app
from steplens.models.controls import alternative
from steplens.models.dit import ReferenceDenoiser, random_tiny
from steplens.search.scores import final_verifier
from steplens.tasks import get_task
from steplens.tasks.audit import audit_task, task_violations
from steplens.tasks.maze import bfs_path, count_shortest, floor_mask, is_simple_path, longer_route
from steplens.tasks.process import process_score

TASK = get_task("maze_braid")


@pytest.mark.parametrize("size", [3, 4, 6, 10])
def test_generated_braids_have_one_shortest_and_a_longer_valid_route(size):
    for seed in range(8):
        inst = TASK.generate(seed, size)
        assert TASK.generate(seed, size) == inst
        perfect = get_task("maze").generate(seed, size)
        floor, base = floor_mask(inst), floor_mask(perfect)
        assert (floor >= base).all() and floor.sum() > base.sum()  # walls only removed, from the same carving
        assert count_shortest(floor, inst.start, inst.goal) == 1
        alt = longer_route(floor, inst.start, inst.goal)
        mask = np.zeros_like(floor)
        mask[tuple(np.array(alt).T)] = True
        assert is_simple_path(mask, inst.start, inst.goal) and len(alt) > len(bfs_path(floor, inst.start, inst.goal))


def test_count_shortest_counts_a_square_loop_twice():
    floor = np.ones((3, 3), dtype=bool)
    assert count_shortest(floor, (0, 0), (2, 2)) == 6 and count_shortest(floor, (0, 0), (0, 2)) == 1
    floor[1, 1] = False
    assert count_shortest(floor, (0, 0), (2, 2)) == 2


def test_scorer_separates_valid_from_shortest_and_the_verifier_does_not():
    for seed in range(6):
        inst = TASK.generate(seed, 6)
        truth = TASK.blocks(inst)
        ok = TASK.score_blocks(inst, truth[-1], truth)
        assert ok.success and ok.details["valid_route"] and ok.details["shortest_route"]
        longer = task_violations(TASK, inst)["longer_route"]
        s = TASK.score_blocks(inst, longer[-1], longer)
        assert not s.success and s.details["valid_route"] and not s.details["shortest_route"]
        v = final_verifier("maze_braid", inst, np.stack([truth, longer]))
        assert v[0] > 0.9 and v[1] > 0.9  # the route verifier accepts both: on braids it is not the oracle
        wall = task_violations(TASK, inst)["through_wall"]
        assert not TASK.score_blocks(inst, wall[-1], wall).details["valid_route"]


def test_audit_process_and_candidates_control():
    rep = audit_task(TASK, 4, 0, 5)
    assert rep.passed and "violation:longer_route" in {c.name for c in rep.cases}
    inst = TASK.generate(3, 5)
    truth = TASK.blocks(inst)
    assert process_score(TASK, inst, truth).success
    jump = np.concatenate([truth[:1].repeat(len(truth) - 1, 0), truth[-1:]])
    assert not process_score(TASK, inst, jump).success
    alt = alternative(TASK, inst)
    assert alt is not None and TASK.score_blocks(inst, alt[-1], alt).details["valid_route"]


def test_a_maze_model_conditions_on_maze():
    den = ReferenceDenoiser(random_tiny())
    inst = TASK.generate(1, 3, n_frames=4, cell_px=1)
    first = den.encode(TASK.blocks(inst)[None])[:, :, 0]
    cond = den.make_cond(first, TASK, [inst])
    assert torch.equal(cond.task_id, torch.tensor([den.task_index("maze")]))


def test_cli_search_run_on_braids_has_verifier_and_oracle(tmp_path):
    from steplens.models.serialize import export_random_tiny

    model = export_random_tiny(tmp_path / "tiny", scale=0.05)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["search", "run", "--model", str(model), "--task", "maze_braid", "--size", "3", "--n", "2", "--k", "2",
                                 "--budget", "2", "--steps", "4", "--screen-step", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "summary.json").read_text())["methods"]
    assert rows["best_of_2_verifier"]["uses_task_rules"] and rows["best_of_2_oracle"]["uses_ground_truth"]


@pytest.mark.parametrize("layout", ["flat", "vbvr"])
def test_vbvr_writer_round_trips_braids(tmp_path, layout):
    from steplens.tasks.vbvr import bench_instance, generate_set, iter_bench, iter_samples, read_sample

    generate_set("maze_braid", 2, 5, tmp_path, 4, progress=False, layout=layout)
    if layout == "flat":
        got = [read_sample(r) for r in iter_samples(tmp_path)]
    else:
        got = [bench_instance(r) for r in iter_bench(tmp_path)]
    assert [s.task.name for s in got] == ["maze_braid"] * 2
    assert sorted(s.inst.seed for s in got) == [5, 6]
    assert all(s.inst == TASK.generate(s.inst.seed, 4) for s in got)
