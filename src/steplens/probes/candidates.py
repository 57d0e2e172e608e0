"""Card measures that can fail: complete candidates, corrections to a complete answer, pruning, each beside its null.

Pure functions over decoded clean estimates per step (the Chain-of-Steps trace, `(S, T, Hb, Wb, 3)` uint8 per sample).

- A maze frame's **complete candidates** (`maze_candidates`): lit = floor blocks of path colour >= 0.5
  (`metrics.LIT`). A candidate is a route the frame lights end to end: the route from the start to the goal
  (every block of the maze's route lit), or the route from the start to a dead end of the maze whose part
  off the true route has >= 2 blocks, every block lit. An off-path blob that no lit route joins to the start
  is not a candidate. Two or more candidates: the frame holds complete alternatives.
- A frame is a **complete but different answer** (`complete_but_different`) when the task's scorer fails it
  and it is still a whole answer: maze, the blocks classified as path (with the start) form one simple chain
  from the start to a floor block other than the goal, through no wall; any other task, its classified final
  frame equals the final frame of one of the task's named rule violations (`task.violations`).
- Per sample over the early steps (the first quarter, as the Chain-of-Steps window):
  `complete_alternatives` (some early step holds >= 2 candidates); `corrected` (some early step is a complete
  but different answer and the final answer is right); `pruned` (some early step holds >= 2 candidates and the
  final frame exactly one).

`card_measures(task, insts, steps, null_steps)` gives each rate on the model and on the null (the same
instances through `null:shrink`), and the model minus the null, paired over instances (bootstrap CI): the
value a card's verdict reads. `scene_given(task, insts)` says whether the scene is in the conditioning frame
(then perception before action is not measurable: the scene is copied, not perceived).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..stats import bootstrap_diff, wilson
from ..tasks.base import Task, classify_blocks
from ..tasks.maze import MAZE_COLORS, PATH, START, MazeInstance, bfs_path, floor_mask, is_simple_path, path_strength
from .metrics import LIT

NULL_MODEL = "null:shrink"
MEASURES = ("complete_alternatives", "corrected", "pruned")
SCENE_GIVEN = "not measurable on this task: the scene is given"


def dead_ends(floor: np.ndarray, exclude: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Floor blocks with exactly one floor neighbour (the ends of a perfect maze's corridors), `exclude` left out."""
    h, w = floor.shape
    out = []
    for r, c in zip(*np.nonzero(floor)):
        p = (int(r), int(c))
        nbrs = sum(1 for q in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)) if 0 <= q[0] < h and 0 <= q[1] < w and floor[q])
        if nbrs == 1 and p not in exclude:
            out.append(p)
    return out


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
        if not route.any() or (route & ~floor_mask(inst)).any():
            return False
        route[inst.start] = True
        return any(is_simple_path(route, inst.start, e) for e in zip(*map(lambda a: a.tolist(), np.nonzero(route))) if e != inst.start)
    own = getattr(task, "violations", None)
    if not callable(own):
        return False
    cls = classify_blocks(frame, task.colors)
    return any((classify_blocks(v[-1].astype(np.float32), task.colors) == cls).all() for v in own(inst).values())


def sample_measures(task: Task, inst: Any, steps: np.ndarray, early: int) -> dict[str, bool]:
    """One sample's three booleans from its decoded x0_hat per step (S, T, Hb, Wb, 3), early = the first `early` steps."""
    last = steps[:, -1]
    final_ok = task.score_blocks(inst, last[-1].astype(np.float32), steps[-1]).success
    if task.name == "maze":
        counts = [maze_candidates(inst, f) for f in last]
        alternatives = max(counts[:early]) >= 2
        pruned = alternatives and counts[-1] == 1
    else:
        alternatives = pruned = False  # candidates are counted on mazes only
    corrected = final_ok and any(complete_but_different(task, inst, f) for f in last[:early])
    return {"complete_alternatives": bool(alternatives), "corrected": bool(corrected), "pruned": bool(pruned)}


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
            d, lo, hi = bootstrap_diff([float(f[m]) for f in null], [float(f[m]) for f in model])
            out[m] = {"diff": d, "ci95": [lo, hi]}
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
