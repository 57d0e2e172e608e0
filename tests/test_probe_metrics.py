import numpy as np

from steplens.probes.metrics import blueness, commit_step, maze_step_metrics, self_correction, settle_step
from steplens.tasks import get_task
from steplens.tasks.maze import floor_mask, solution_mask


def _maze():
    task = get_task("maze")
    inst = task.generate(7, 5, n_frames=4, cell_px=1)
    return task, inst


def test_blueness_of_palette_colours():
    cols = np.array([[0, 0, 255], [255, 255, 255], [0, 0, 0], [0, 200, 0], [220, 0, 0]], dtype=np.float32)
    assert blueness(cols).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_metrics_see_a_pruned_candidate_branch():
    task, inst = _maze()
    truth = task.blocks(inst)[-1].astype(np.float32)  # the solved final frame
    floor, sol = floor_mask(inst), solution_mask(inst)
    off = floor & ~sol
    off[inst.start] = off[inst.goal] = False
    # an off-path floor block next to the path: light it up as a dead-end candidate
    r, c = next((r, c) for r, c in zip(*np.nonzero(off)) if any(sol[y, x] for y, x in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))))
    branchy = truth.copy()
    branchy[r, c] = (0, 0, 255)
    steps = np.stack([branchy, branchy, truth, truth])
    m = maze_step_metrics(inst, steps)
    assert m.lit_branches.tolist() == [1, 1, 0, 0]
    assert m.off_solution_mass[0] > 0 and m.off_solution_mass[-1] == 0
    assert m.solution_mass.tolist() == [1.0] * 4
    assert m.answer_correct.tolist() == [False, False, True, True]
    assert m.commit_step == 2 and m.final_correct
    assert self_correction(m.answer_correct) == "corrected"


def test_commit_step_and_settling():
    a, b = np.zeros((2, 2), bool), np.ones((2, 2), bool)
    assert commit_step([a, b, a, a]) == 2
    assert commit_step([a, a, a]) == 0
    assert self_correction(np.array([True, True, False])) == "lost"
    assert self_correction(np.array([False, False])) == "never"
    assert settle_step(np.array([0.0, 1.0, 0.5, 0.52, 0.5]), 0.05) == 2
