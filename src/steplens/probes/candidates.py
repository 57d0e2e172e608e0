"""Card measures that can fail: complete candidates, corrections to a complete answer, pruning, each beside its null.

Pure functions over decoded clean estimates per step (the Chain-of-Steps trace, `(S, T, Hb, Wb, 3)` uint8 per sample).

- A maze frame's **complete candidates** (`maze_candidates`): lit = floor blocks of path colour >= 0.5
  (`metrics.LIT`). A candidate is a route the frame lights end to end: the route from the start to the goal
  (every block of the maze's route lit), or the route from the start to a dead end of the maze whose part off
  the true route has >= 2 blocks (a corridor and a cell), every block lit; a route that runs on past the goal to a
  dead end counts too (an overshoot). An off-path blob that no lit route joins to the start
  is not a candidate. Two or more candidates: the frame holds complete alternatives.
- A frame is a **complete but different answer** (`complete_but_different`) when the task's scorer fails it
  and it is still a whole answer: maze, the blocks classified as path (with the start, and the goal when the
  path runs on through it) form one simple chain from the start to a dead end of the maze, through no wall (a
  prefix of the true route is not complete, nor is a route that stops in a corridor); any other task, its classified final
  frame equals the final frame of one of the task's named rule violations (`task.violations`).
- Per sample: `complete_alternatives` (a step of the first quarter, the Chain-of-Steps window, holds >= 2
  candidates); `corrected` (a step of the first half is a complete but different answer and the final answer
  is right); `pruned` (a step of the first quarter holds >= 2 candidates and the final frame exactly one);
  `early_plan` (the classified last frame of x0_hat is the same from the last step of the first quarter to the end,
  and that final is a complete answer: right, or complete but different). An answer that never changes because
  nothing is ever drawn (`null:noise`) is not an early plan.

`card_measures(task, insts, steps, null_steps)` gives each rate on the model and on the null (the same
instances through `null:shrink`), and the model minus the null, paired over instances (Newcombe CI, exact McNemar): the
value a card's verdict reads. `scene_given(task, insts)` says whether the scene is in the conditioning frame
(then perception before action is not measurable: the scene is copied, not perceived).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..stats import paired_diff, wilson
from ..tasks.base import Task, classify_blocks
from ..tasks.maze import MAZE_COLORS, PATH, START, MazeInstance, bfs_path, dead_ends, floor_mask, is_simple_path, path_strength
from .metrics import LIT

NULL_MODEL = "null:shrink"
MEASURES = ("complete_alternatives", "corrected", "pruned", "early_plan")
SCENE_GIVEN = "not measurable on this task: the scene is given"


def maze_candidates(inst: MazeInstance, frame: np.ndarray) -> int:
    """Complete candidate routes one last frame (Hb, Wb, 3) lights: to the goal, and to dead ends >= 2 blocks off the true route."""
    floor = floor_mask(inst)
    lit = (path_strength(np.asarray(frame, dtype=np.float32)) >= LIT) & floor
    lit[inst.start] = lit[inst.goal] = True
    truth = set(bfs_path(floor, inst.start, inst.goal))
    count = int(all(lit[p] for p in truth))
    for end in dead_ends(floor, (inst.start, inst.goal)):
        route = bfs_path(floor, inst.start, end)
        if sum(p not in truth for p in route) >= 2 and all(lit[p] for p in route):
            count += 1
    return count


def complete_but_different(task: Task, inst: Any, frame: np.ndarray) -> bool:
    """The scorer fails `frame` (Hb, Wb, 3) and it is a whole answer all the same (module docstring)."""
    frame = np.asarray(frame, dtype=np.float32)
    if task.score_blocks(inst, frame, frame[None]).success:
        return False
    if task.name == "maze":
        cls = classify_blocks(frame, MAZE_COLORS)
        if cls[inst.start] != MAZE_COLORS.index(START):
            return False
        route = cls == MAZE_COLORS.index(PATH)
        floor = floor_mask(inst)
        if not route.any() or (route & ~floor).any():
            return False
        route[inst.start] = True
        (gr, gc), (h, w) = inst.goal, route.shape
        if sum(route[q] for q in ((gr - 1, gc), (gr + 1, gc), (gr, gc - 1), (gr, gc + 1)) if 0 <= q[0] < h and 0 <= q[1] < w) >= 2:
            route[inst.goal] = True  # the route runs on through the goal (an overshoot)
        return any(route[e] and is_simple_path(route, inst.start, e) for e in dead_ends(floor, (inst.start, inst.goal)))
    own = getattr(task, "violations", None)
    if not callable(own):
        return False
    cls = classify_blocks(frame, task.colors)
    return any((classify_blocks(v[-1].astype(np.float32), task.colors) == cls).all() for v in own(inst).values())


def sample_measures(task: Task, inst: Any, steps: np.ndarray, early: int) -> dict[str, bool]:
    """One sample's three booleans from its decoded x0_hat per step (S, T, Hb, Wb, 3).

    Candidates are counted in the first `early` steps; a complete but different answer is looked for in the first half.
    """
    last = steps[:, -1]
    final_ok = task.score_blocks(inst, last[-1].astype(np.float32), steps[-1]).success
    if task.name == "maze":
        counts = [maze_candidates(inst, f) for f in last]
        alternatives = max(counts[:early]) >= 2
        pruned = alternatives and counts[-1] == 1
    else:
        alternatives = pruned = False  # candidates are counted on mazes only
    corrected = final_ok and any(complete_but_different(task, inst, f) for f in last[: max(early, len(last) // 2)])
    colors = MAZE_COLORS if task.name == "maze" else task.colors
    answers = [classify_blocks(f.astype(np.float32), colors) for f in last[early - 1:]]
    planned = all(np.array_equal(a, answers[-1]) for a in answers) and (
        final_ok or complete_but_different(task, inst, last[-1]))
    return {"complete_alternatives": bool(alternatives), "corrected": bool(corrected), "pruned": bool(pruned),
            "early_plan": bool(planned)}


def rates(flags: Sequence[dict[str, bool]]) -> dict[str, Any]:
    """Each measure's rate with its Wilson CI."""
    n = len(flags)
    out: dict[str, Any] = {"n": n}
    for m in MEASURES:
        k = sum(f[m] for f in flags)
        out[m] = {"rate": k / n if n else None, "ci95": list(wilson(k, n)) if n else None}
    return out


def card_measures(task: Task, insts: Sequence[Any], steps: np.ndarray, null_steps: np.ndarray | None) -> dict[str, Any]:
    """The model's rates, the null's on the same instances, and model minus null paired over instances."""
    early = max(1, steps.shape[1] // 4)
    model = [sample_measures(task, i, s, early) for i, s in zip(insts, steps)]
    out: dict[str, Any] = {"n": len(model), "early_steps": early, "null_model": NULL_MODEL, "model": rates(model)}
    if null_steps is not None:
        null = [sample_measures(task, i, s, early) for i, s in zip(insts, null_steps)]
        out["null"] = rates(null)
        for m in MEASURES:
            d, lo, hi, rec = paired_diff([float(f[m]) for f in null], [float(f[m]) for f in model], rates=True)
            out[m] = {"diff": d, "ci95": [lo, hi], "stats": rec}
    perceived = not scene_given(task, insts)
    out["perception"] = {"applicable": "measured" if perceived else SCENE_GIVEN}
    return out


def scene_given(task: Task, insts: Sequence[Any]) -> bool:
    """True when every instance's scene blocks (walls, objects) are drawn in frame 0, the frame the model is conditioned on."""
    for inst in insts:
        first = task.blocks(inst)[0]
        truth = task.blocks(inst)[-1]
        scene = task.roles(inst)["scene"]
        if not (first[scene] == truth[scene]).all():
            return False
    return True
