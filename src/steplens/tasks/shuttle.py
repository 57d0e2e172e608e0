"""Shuttle (memory of the start): the blue agent walks to the red target, marks it, and walks back.

An n x n room (n is the size, 7 to 21): black border walls, white floor, a blue agent and a red target on
the floor at least 3 steps apart. The start is marked only by the agent standing on it in frame 0:
once the agent leaves, the start block is plain floor like every other in the generated frames, but
frame 0 is the conditioning an image-to-video model sees at every frame, so the way back is a copy,
not a memory (`recall` declares it in the conditioning). The agent goes vertically then horizontally to the target (reached at frame
(T-1)//2, jumping several blocks per frame when the route is longer than the frames), which turns
green (visited) once the agent steps off it; it returns by the other corner of the rectangle,
vertically first, so the way back is not the way out retraced.

Generator version 2 (the default) adds three black pillars (wall blocks) on the floor, never on either
route, start or target; they stay where they are. Version 1 (`generate(..., version=1)`) draws the old
rooms without them, seed for seed.

Scoring (final frame only): success iff the one blue block is exactly the start, the target block
is green, and every other block is its floor or wall colour (no off-palette block). Failure
examples: the agent still on the target, one block off the start, at the route's corner, two
agents, the target still red (never visited) or erased, a pillar removed. The final frame cannot show that the agent
really travelled: an agent that stays put but turns the target green also succeeds. Partial score:
IoU of the (block, colour) pairs of agent and target with the expected pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import COLOR_INDEX, IN_CONDITIONING, PALETTE_ARRAY, Recall, Score, Task, TaskInputError, classify_blocks, with_finals

WALL, FLOOR, AGENT, TARGET, VISITED = "black", "white", "blue", "red", "green"
SHUTTLE_COLORS = (WALL, FLOOR, AGENT, TARGET, VISITED)
MIN_DISTANCE = 3  # Manhattan steps between start and target
N_PILLARS = 3  # wall blocks on the floor (version 2)

Cell = tuple[int, int]


@dataclass(frozen=True)
class ShuttleInstance:
    size: int  # room side in blocks, walls included
    seed: int
    start: tuple[int, int]
    target: tuple[int, int]
    n_frames: int = 8
    cell_px: int = 8
    pillars: tuple[tuple[int, int], ...] = ()  # wall blocks on the floor, off both routes (version 2)


def l_path(a: Cell, b: Cell) -> list[Cell]:
    """Blocks from a to b, a and b included: vertically to b's row, then horizontally."""
    (r0, c0), (r1, c1) = a, b
    dr, dc = (1 if r1 >= r0 else -1), (1 if c1 >= c0 else -1)
    return [(r, c0) for r in range(r0, r1 + dr, dr)] + [(r1, c) for c in range(c0 + dc, c1 + dc, dc)]


def shuttle_track(start: Cell, target: Cell, n_frames: int) -> list[Cell]:
    """The agent's block in each frame: out to `target` in frames 0..(T-1)//2, back to `start` in the rest."""
    out, back = l_path(start, target), l_path(target, start)
    t_goal, t_last = (n_frames - 1) // 2, n_frames - 1
    track = []
    for t in range(n_frames):
        if t <= t_goal:
            track.append(out[(t * (len(out) - 1) + t_goal // 2) // t_goal])  # integer rounding: exact on every platform
        else:
            k, m = t - t_goal, t_last - t_goal
            track.append(back[(k * (len(back) - 1) + m // 2) // m])
    return track


def agent_track(inst: ShuttleInstance) -> list[Cell]:
    """The agent's block in each frame of a shuttle instance."""
    return shuttle_track(inst.start, inst.target, inst.n_frames)


def room_indices(size: int, agents: tuple[Cell, ...], target: Cell, target_color: str | None,
                 others: tuple[tuple[Cell, str | None], ...] = ()) -> np.ndarray:
    """(size, size) palette indices: walls, floor, the target in `target_color` (None: floor), each (block, colour) of
    `others` likewise (further targets), agents on top."""
    idx = np.full((size, size), COLOR_INDEX[WALL], dtype=np.int64)
    idx[1:-1, 1:-1] = COLOR_INDEX[FLOOR]
    for cell, color in ((target, target_color), *others):
        if color is not None:
            idx[cell] = COLOR_INDEX[color]
    for a in agents:
        idx[a] = COLOR_INDEX[AGENT]
    return idx


def start_recall(start: Cell, track: list[Cell]) -> Recall:
    """The start block, to be shown again by the agent after the frames of `track` in which it is away from it."""
    away = tuple(t for t, a in enumerate(track) if t > 0 and a != start)
    return Recall("the agent back on the start block it has left", AGENT, start, away, IN_CONDITIONING,
                  "the agent stands on the start block in frame 0, the given frame the model sees at every frame, "
                  "so putting it back there is a copy of the conditioning, not a memory")


def beside(size: int, start: Cell, avoid: tuple[Cell, ...]) -> Cell:
    """A floor block next to `start` (right, left, below, above: the first that is floor and not in `avoid`)."""
    sides = [(start[0] + dr, start[1] + dc) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    return next(p for p in sides if 1 <= p[0] < size - 1 and 1 <= p[1] < size - 1 and p not in avoid)



def match_room(task: str, final: np.ndarray, want_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A final frame's block colours (Hb, Wb, 3) against the expected palette indices (Hb, Wb).

    Returns the seen and the expected classes (indices into SHUTTLE_COLORS, -1: off-palette) and the IoU of the
    (block, colour) pairs of agent and target classes: what the agent did, not the unchanging room.
    """
    n = want_idx.shape[0]
    if final.shape[:2] != want_idx.shape:
        raise TaskInputError(f"{task} size {n} needs a {n}x{n} block grid, got {final.shape[:2]}")
    cls = classify_blocks(final, SHUTTLE_COLORS)
    want = np.full(want_idx.shape, -1, dtype=np.int64)
    for i, c in enumerate(SHUTTLE_COLORS):
        want[want_idx == COLOR_INDEX[c]] = i
    marks = [SHUTTLE_COLORS.index(c) for c in (AGENT, TARGET, VISITED)]
    seen = {(int(r), int(c), int(cls[r, c])) for r, c in np.argwhere(np.isin(cls, marks))}
    expected = {(int(r), int(c), int(want[r, c])) for r, c in np.argwhere(np.isin(want, marks))}
    union = len(seen | expected)
    return cls, want, len(seen & expected) / union if union else 1.0


class ShuttleTask(Task[ShuttleInstance]):
    name = "shuttle"
    instance_type = ShuttleInstance
    default_size = 9
    sizes = tuple(range(7, 22))
    description = "Walk the blue agent to the red target and back to where it started."
    colors = SHUTTLE_COLORS
    scene_colors = (WALL,)
    background = FLOOR
    generator_version: ClassVar[int] = 2

    def generate(self, seed: int, size: int | None = None, *, version: int | None = None, n_frames: int = 8, cell_px: int = 8,
                 **kw: Any) -> ShuttleInstance:
        """Version 2 (default) adds the pillars; version 1 reproduces the old generator's rooms exactly."""
        version = self.check_version(version)
        n = self.check_generate_args(size, n_frames, kw, size_what="room side in blocks", min_frames=3, frames_why="start, target, back")
        rng = np.random.default_rng([seed, n])
        cells = [(r, c) for r in range(1, n - 1) for c in range(1, n - 1)]
        start = cells[int(rng.integers(len(cells)))]
        far = [p for p in cells if abs(p[0] - start[0]) + abs(p[1] - start[1]) >= MIN_DISTANCE]
        target = far[int(rng.integers(len(far)))]
        pillars: tuple[Cell, ...] = ()
        if version >= 2:
            route = set(l_path(start, target)) | set(l_path(target, start))
            free = [p for p in cells if p not in route]
            pillars = tuple(sorted(free[int(i)] for i in rng.choice(len(free), size=min(N_PILLARS, len(free)), replace=False)))
        return ShuttleInstance(n, int(seed), start, target, n_frames, cell_px, pillars)

    def room(self, inst: ShuttleInstance, agents: tuple[Cell, ...], target_color: str | None) -> np.ndarray:
        """`room_indices` of this instance's room (its pillars drawn as wall)."""
        return room_indices(inst.size, agents, inst.target, target_color, tuple((p, WALL) for p in inst.pillars))

    def blocks(self, inst: ShuttleInstance) -> np.ndarray:
        t_goal = (inst.n_frames - 1) // 2
        frames = [self.room(inst, (a,), TARGET if t <= t_goal else VISITED) for t, a in enumerate(agent_track(inst))]
        return PALETTE_ARRAY[np.stack(frames)]

    def prompt(self, inst: ShuttleInstance) -> str:
        return (
            "A blue agent in a walled room. Walk it to the red target, which turns green once visited, "
            "then walk it back to exactly the block where it started; the start is not marked once the agent has left."
            + (" The black pillars stay where they are." if inst.pillars else "")
        )

    def recall(self, inst: ShuttleInstance) -> Recall:
        """The start block, unmarked once the agent has left it: the agent must come back to it."""
        return start_recall(inst.start, agent_track(inst))

    def final_indices(self, inst: ShuttleInstance) -> np.ndarray:
        return self.room(inst, (inst.start,), VISITED)

    def violations(self, inst: ShuttleInstance) -> dict[str, np.ndarray]:
        """Named block videos whose final frame breaks the rule in one specific way (all must fail)."""
        n, s, g = inst.size, inst.start, inst.target
        near = beside(n, s, (g, *inst.pillars))
        finals = {
            "stayed_at_target": self.room(inst, (g,), VISITED),
            "off_by_one": self.room(inst, (near,), VISITED),
            "two_agents": self.room(inst, (s, g), VISITED),
            "target_not_visited": self.room(inst, (s,), TARGET),
            "target_erased": self.room(inst, (s,), None),
        }
        corner = (s[0], g[1])  # the turn of the way back
        if corner not in (s, g):
            finals["at_corner"] = self.room(inst, (corner,), VISITED)
        if inst.pillars:
            removed = self.room(inst, (s,), VISITED)
            removed[inst.pillars[0]] = COLOR_INDEX[FLOOR]
            finals["pillar_removed"] = removed
        return with_finals(self.blocks(inst), finals)

    def score_blocks(self, inst: ShuttleInstance, final: np.ndarray, video: np.ndarray) -> Score:
        cls, want, iou = match_room(self.name, final, self.final_indices(inst))
        details = {
            "agent_blocks": [[int(r), int(c)] for r, c in np.argwhere(cls == SHUTTLE_COLORS.index(AGENT))],
            "start": list(inst.start),
            "target_visited": bool(cls[inst.target] == SHUTTLE_COLORS.index(VISITED)),
            "wrong_blocks": int((cls != want).sum()),
            "unclassified": int((cls < 0).sum()),
        }
        return Score(bool(np.array_equal(cls, want)), float(iou), details)
