"""Process scores: is every frame a legal successor of the one before, under the task's rules?

The final-state scorers read the last frame only, so a video that holds the puzzle and shows the answer in
its last frame alone ("end-jump") succeeds. The process score reads every frame. A rule per task, each
with its allowed change per frame derived from how the ground truth is rendered at the instance's frame
count (`n_frames`: the ground truth subsamples the process, so at 4 frames a path grows by a third of its
length per frame):

- maze: path blocks never leave a wall-free floor, never vanish, stay joined to the start (the path grows
  contiguously from it), and no frame adds more than the ground truth adds in its largest frame;
- tictactoe, tictactoe_fork: every change from the puzzle lies in one empty square (a move appears once), is
  drawn in X colour, never vanishes, and no frame adds more blocks than the ground truth's largest frame;
- rotate, rotate_large: each frame shows the piece turned clockwise about the pivot by one of the ground
  truth's angles, never turning back and never more than one frame's turn at once (it turns monotonically);
- occlusion: the object is where its speed (shown by the trail of frame 0) puts it, or hidden behind the
  occluder when that place is (it keeps its speed);
- shuttle, shuttle_near, shuttle_choice: one agent in every frame, moving at most as far per frame as the ground truth's
  largest move (Manhattan), and a target turns green only after the agent has stood on it.

`process_score(task, inst, frames)` -> Score: success iff no frame breaks its rule; score: the fraction of
transitions before the first one that does; details: `first_violation` (the frame, or None) and `reason`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import Score, Task, classify_blocks

Violation = tuple[int, str] | None
Rule = Callable[[Task, Any, np.ndarray], Violation]  # (task, instance, classified video (T, Hb, Wb) int) -> first break


def classified(task: Task, video: np.ndarray) -> np.ndarray:
    """Block colours (T, Hb, Wb, 3) -> (T, Hb, Wb) indices into `task.colors` (-1: far from every colour)."""
    return np.stack([classify_blocks(np.asarray(f, dtype=np.float32), task.colors) for f in video])


def truth_classified(task: Task, inst: Any) -> np.ndarray:
    return classified(task, task.blocks(inst))


def growth_limit(drawn: np.ndarray) -> int:
    """The most blocks the ground truth's drawn masks (T, Hb, Wb) add from one frame to the next."""
    return max([int((b & ~a).sum()) for a, b in zip(drawn, drawn[1:])] or [0])


def growth_violation(drawn: np.ndarray, limit: int) -> Violation:
    """First frame where a drawn block vanishes or more than `limit` appear at once."""
    for t in range(1, len(drawn)):
        if (drawn[t - 1] & ~drawn[t]).any():
            return t, "a drawn block disappeared"
        k = int((drawn[t] & ~drawn[t - 1]).sum())
        if k > limit:
            return t, f"{k} blocks appeared in one frame; the ground truth draws at most {limit} a frame"
    return None


def joined(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """Blocks of `mask` 4-connected to `seed` (seed included)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    stack = [seed]
    seen[seed] = True
    while stack:
        r, c = stack.pop()
        for q in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= q[0] < h and 0 <= q[1] < w and mask[q] and not seen[q]:
                seen[q] = True
                stack.append(q)
    return seen


# -- the rules ------------------------------------------------------------------------------------
def maze_rule(task: Task, inst: Any, cls: np.ndarray) -> Violation:
    from .maze import MAZE_COLORS, PATH, floor_mask

    floor = floor_mask(inst)
    blue = cls == MAZE_COLORS.index(PATH)
    limit = growth_limit(truth_classified(task, inst) == MAZE_COLORS.index(PATH))
    for t, b in enumerate(blue):
        if (b & ~floor).any():
            return t, "path colour on a wall"
        reach = joined(b | _point(b.shape, inst.start), inst.start)
        if (b & ~reach).any():
            return t, "path blocks not joined to the start"
    return growth_violation(blue, limit)


def _point(shape: tuple[int, ...], p: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[p] = True
    return m


def tictactoe_rule(task: Task, inst: Any, cls: np.ndarray) -> Violation:
    from .tictactoe import X, board_side, square_origin

    truth = truth_classified(task, inst)
    changed = cls != truth[0]
    limit = growth_limit(truth != truth[0])
    s, n = inst.square, board_side(inst.board)
    squares = [k for k, m in enumerate(inst.board) if m == "."]
    where = np.full(changed.shape[1:], -1)
    for k in squares:
        r, c = square_origin(k, s, n)
        where[r : r + s, c : c + s] = k
    used: set[int] = set()
    for t, ch in enumerate(changed):
        if (ch & (where < 0)).any():
            return t, "a change outside the empty squares"
        if (ch & (cls[t] != task.colors.index(X))).any():
            return t, "a change that is not X colour"
        used |= set(where[ch].tolist())
        if len(used) > 1:
            return t, f"marks in {len(used)} squares: a move appears once"
    return growth_violation(changed, limit)


def rotate_rule(task: Task, inst: Any, cls: np.ndarray) -> Violation:
    from .rotate import PIECE, PIVOT, rotated_cells

    t_last = inst.n_frames - 1
    poses = [rotated_cells(inst.cells, inst.pivot, k / t_last) for k in range(inst.n_frames)]
    prev = 0
    for t, c in enumerate(cls):
        drawn = {(int(r), int(q)) for r, q in np.argwhere((c == task.colors.index(PIECE)) | (c == task.colors.index(PIVOT)))}
        match = [k for k, p in enumerate(poses) if p == drawn]
        if not match:
            return t, "the piece is not the shape turned by any of the ground truth's angles"
        ok = [k for k in match if prev <= k <= prev + 1]
        if not ok:
            return t, f"the piece turned from {prev}/{t_last} to {match[0]}/{t_last} of a quarter turn in one frame"
        prev = ok[-1]
    return None


def occlusion_rule(task: Task, inst: Any, cls: np.ndarray) -> Violation:
    from .occlusion import OBJECT, ROW, hidden, position

    for t in range(1, len(cls)):
        red = [(int(r), int(c)) for r, c in np.argwhere(cls[t] == task.colors.index(OBJECT))]
        want = position(inst, t) if t < inst.n_frames else None
        if want is None:
            return t, "more frames than the instance's"
        if hidden(inst, want) and red:
            return t, f"the object is visible at {red} while its speed puts it behind the occluder"
        if not hidden(inst, want) and red != [(ROW, want)]:
            return t, f"the object is at {red}; its speed puts it at column {want}"
    return None


def shuttle_rule(task: Task, inst: Any, cls: np.ndarray) -> Violation:
    from .shuttle import AGENT, VISITED

    def agents(c: np.ndarray) -> list[tuple[int, int]]:
        return [(int(r), int(q)) for r, q in np.argwhere(c == task.colors.index(AGENT))]

    track = [agents(c)[0] for c in truth_classified(task, inst)]
    limit = max(abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(track, track[1:]))
    visited: set[tuple[int, int]] = set()
    prev = None
    for t, c in enumerate(cls):
        a = agents(c)
        if len(a) != 1:
            return t, f"{len(a)} agents"
        if prev is not None and abs(a[0][0] - prev[0]) + abs(a[0][1] - prev[1]) > limit:
            return t, f"the agent moved {abs(a[0][0] - prev[0]) + abs(a[0][1] - prev[1])} blocks in one frame; the ground truth moves at most {limit}"
        green = {(int(r), int(q)) for r, q in np.argwhere(c == task.colors.index(VISITED))}
        if green - visited:
            return t, f"a target turned green before the agent stood on it: {sorted(green - visited)}"
        visited.add(a[0])
        prev = a[0]
    return None


RULES: dict[str, Rule] = {"maze": maze_rule, "maze_braid": maze_rule, "tictactoe": tictactoe_rule, "tictactoe_fork": tictactoe_rule, "rotate": rotate_rule,
                          "rotate_large": rotate_rule, "occlusion": occlusion_rule, "shuttle": shuttle_rule, "shuttle_near": shuttle_rule,
                          "shuttle_choice": shuttle_rule}


def process_score(task: Task, inst: Any, frames: np.ndarray) -> Score:
    """Every frame a legal successor of the one before (module docstring); `frames` (T, H, W, 3) uint8 at any resolution."""
    rule = next((RULES[c.name] for c in type(task).__mro__ if getattr(c, "name", None) in RULES), None)  # subclasses inherit
    if rule is None:
        return Score(False, 0.0, {"first_violation": None, "reason": f"no process rule for task {task.name!r}"})
    cls = classified(task, task.video_blocks(inst, frames))
    bad = rule(task, inst, cls)
    if bad is None:
        return Score(True, 1.0, {"first_violation": None, "reason": None, "frames": len(cls)})
    t, why = bad
    return Score(False, (t - 1) / max(1, len(cls) - 1) if t > 0 else 0.0, {"first_violation": t, "reason": why, "frames": len(cls)})


def end_jump(video: np.ndarray) -> np.ndarray:
    """A video with no process: its first frame held, then its last frame (T, ...) -> (T, ...)."""
    out = np.repeat(video[:1], len(video), axis=0)
    out[-1] = video[-1]
    return out
