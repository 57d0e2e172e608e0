"""Shuttle to the nearest (memory of the start, and a choice): the agent visits the nearest of three targets and walks back.

An n x n room (n is the size): black border walls, white floor, a blue agent and three red targets
on distinct floor blocks, each at least 3 steps from the agent. Exactly one target is strictly the
nearest to the agent by Manhattan distance (fewest steps; the generator redraws the targets until
it is). The agent walks to that target exactly as in `shuttle`: vertically then horizontally,
reaching it at frame (T-1)//2, then back to its start by the other corner of the rectangle. The
nearest target turns green (visited) once the agent steps off it; the other two stay red in every
frame (the way to the nearest never crosses them: every block on it is nearer). The start is marked
only by the agent standing on it in frame 0, so the way back must be remembered.

Scoring (final frame only): success iff the one blue block is exactly the start, the nearest target
is green, the two other targets are red, and every other block is its floor or wall colour (no
off-palette block). Failure examples: a farther target green instead of the nearest, all three
green, the agent still on the target, one block off the start, at the route's corner, two agents,
the nearest still red (never visited), the nearest or another target erased. As in `shuttle`, the
final frame cannot show that the agent really travelled. Partial score: IoU of the (block, colour)
pairs of agent and targets with the expected pairs.

Difficulty: the room size (7 to 21) sets the route length and, against it, the margin of the choice
(`distance_gap`: how many more steps the second-nearest target is than the nearest). Small rooms
are close calls (over 2000 seeds, the gap is 1 step in 79% of instances at size 7, 38% at 11, 24%
at 15, 18% at 21); big rooms have longer routes (the nearest is 3.2, 4.5, 5.8, 8.1 steps away on
average). Rooms above 15 were added as the hard levels of the shuttle family; sizes 7-15 draw the
same instances as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import PALETTE_ARRAY, Recall, Score, Task, TaskInputError, with_finals
from .shuttle import (
    AGENT,
    FLOOR,
    MIN_DISTANCE,
    SHUTTLE_COLORS,
    TARGET,
    VISITED,
    WALL,
    Cell,
    beside,
    match_room,
    room_indices,
    shuttle_track,
    start_recall,
)

N_TARGETS = 3


def steps(a: Cell, b: Cell) -> int:
    """Manhattan distance: the fewest steps between two blocks of an open room."""
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


@dataclass(frozen=True)
class ShuttleNearInstance:
    size: int  # room side in blocks, walls included
    seed: int
    start: tuple[int, int]
    targets: tuple[tuple[int, int], ...]  # in draw order; exactly one is strictly the nearest to the start
    n_frames: int = 8
    cell_px: int = 8

    def __post_init__(self) -> None:
        d = sorted(steps(self.start, t) for t in self.targets)
        if len(set(self.targets)) != len(self.targets) or len(d) < 2 or d[0] == d[1] or self.start in self.targets:
            raise TaskInputError(f"shuttle_near needs distinct targets off the start with one strictly nearest, got "
                                 f"start {self.start} targets {self.targets}")

    @property
    def target(self) -> tuple[int, int]:
        """The nearest target: the one to visit."""
        return min(self.targets, key=lambda t: steps(self.start, t))

    @property
    def others(self) -> tuple[tuple[int, int], ...]:
        """The farther targets, nearest first: they stay red."""
        return tuple(sorted((t for t in self.targets if t != self.target), key=lambda t: steps(self.start, t)))


def distance_gap(inst: ShuttleNearInstance) -> int:
    """How many more steps the second-nearest target is than the nearest (>= 1): small means a close call."""
    return steps(inst.start, inst.others[0]) - steps(inst.start, inst.target)


class ShuttleNearTask(Task[ShuttleNearInstance]):
    name = "shuttle_near"
    instance_type = ShuttleNearInstance
    default_size = 11
    sizes = tuple(range(7, 22))
    description = "Walk the blue agent to the nearest of three red targets and back to where it started."
    colors = SHUTTLE_COLORS
    scene_colors = (WALL, TARGET)  # the farther targets are part of the puzzle in every frame
    background = FLOOR

    def generate(self, seed: int, size: int | None = None, *, n_frames: int = 8, cell_px: int = 8,
                 **kw: Any) -> ShuttleNearInstance:
        try:
            n = self.check_generate_args(size, n_frames, kw, size_what="room side in blocks", min_frames=3,
                                         frames_why="start, target, back")
        except ValueError as e:  # a size or frame count the task cannot draw: the caller's input
            raise TaskInputError(str(e)) from None
        rng = np.random.default_rng([seed, n])
        cells = [(r, c) for r in range(1, n - 1) for c in range(1, n - 1)]
        start = cells[int(rng.integers(len(cells)))]
        far = [p for p in cells if steps(p, start) >= MIN_DISTANCE]
        while True:  # every start has far blocks at two distances at least, so a unique nearest comes
            targets = tuple(far[int(i)] for i in rng.choice(len(far), N_TARGETS, replace=False))
            d = sorted(steps(start, t) for t in targets)
            if d[0] < d[1]:
                return ShuttleNearInstance(n, int(seed), start, targets, n_frames, cell_px)

    def room(self, inst: ShuttleNearInstance, agents: tuple[Cell, ...], target_color: str | None,
             others: tuple[str | None, ...] | None = None) -> np.ndarray:
        """(size, size) palette indices: the nearest target in `target_color`, the others in `others` (default red)."""
        colors = (TARGET,) * len(inst.others) if others is None else others
        return room_indices(inst.size, agents, inst.target, target_color, tuple(zip(inst.others, colors)))

    def blocks(self, inst: ShuttleNearInstance) -> np.ndarray:
        t_goal = (inst.n_frames - 1) // 2
        track = shuttle_track(inst.start, inst.target, inst.n_frames)
        frames = [self.room(inst, (a,), TARGET if t <= t_goal else VISITED) for t, a in enumerate(track)]
        return PALETTE_ARRAY[np.stack(frames)]

    def prompt(self, inst: ShuttleNearInstance) -> str:
        return (
            "A blue agent and three red targets in a walled room. Walk the agent to the nearest red target "
            "(the one it can reach in the fewest steps), which turns green once visited, then walk it back to "
            "exactly the block where it started; the start is not marked once the agent has left. "
            "The other two targets stay red."
        )

    def recall(self, inst: ShuttleNearInstance) -> Recall:
        """The start block, unmarked once the agent has left it: the agent must come back to it."""
        return start_recall(inst.start, shuttle_track(inst.start, inst.target, inst.n_frames))

    def final_indices(self, inst: ShuttleNearInstance) -> np.ndarray:
        return self.room(inst, (inst.start,), VISITED)

    def violations(self, inst: ShuttleNearInstance) -> dict[str, np.ndarray]:
        """Named block videos whose final frame breaks the rule in one specific way (all must fail)."""
        s, g, k = inst.start, inst.target, len(inst.others)
        finals = {
            "visited_wrong_target": self.room(inst, (s,), TARGET, (VISITED,) + (TARGET,) * (k - 1)),
            "visited_all": self.room(inst, (s,), VISITED, (VISITED,) * k),
            "stayed_at_target": self.room(inst, (g,), VISITED),
            "off_by_one": self.room(inst, (beside(inst.size, s, inst.targets),), VISITED),
            "two_agents": self.room(inst, (s, g), VISITED),
            "target_not_visited": self.room(inst, (s,), TARGET),
            "target_erased": self.room(inst, (s,), None),
            "distractor_erased": self.room(inst, (s,), VISITED, (None,) + (TARGET,) * (k - 1)),
        }
        corner = (s[0], g[1])  # the turn of the way back
        if corner not in (s, g):
            finals["at_corner"] = self.room(inst, (corner,), VISITED)
        return with_finals(self.blocks(inst), finals)

    def score_blocks(self, inst: ShuttleNearInstance, final: np.ndarray, video: np.ndarray) -> Score:
        cls, want, iou = match_room(self.name, final, self.final_indices(inst))
        green = SHUTTLE_COLORS.index(VISITED)
        details = {
            "agent_blocks": [[int(r), int(c)] for r, c in np.argwhere(cls == SHUTTLE_COLORS.index(AGENT))],
            "start": list(inst.start),
            "nearest": list(inst.target),
            "visited": [list(t) for t in inst.targets if cls[t] == green],  # the targets shown green, in draw order
            "wrong_blocks": int((cls != want).sum()),
            "unclassified": int((cls < 0).sum()),
        }
        return Score(bool(np.array_equal(cls, want)), float(iou), details)
