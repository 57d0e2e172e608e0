"""Shuttle with a free choice (working memory of the model's own choice): visit any one of three equal targets, then mark it.

An n x n room (n is the size, 7 to 21): black border walls, white floor, a blue agent and three red targets,
all at the same Manhattan distance (>= 3 steps) from the agent: equivalent, so any one may be visited and
the first frame does not say which. The agent walks to the target it chooses (vertically then horizontally,
as in `shuttle`, reached at frame (T-2)//2), then the targets are hidden (plain floor) while it walks back
to its start, which it reaches by frame T-2: that frame shows only the agent on its start, with no trace of
the choice. In the last frame the targets come back: the visited one green, the other two red, the agent on
its start. Which target is green is in no conditioning frame and not computable from it; only the model's
own earlier frames (the walk out) hold it. The ground truth visits the first target in draw order.

Scoring (final frame only): success iff the one blue block is exactly the start, exactly one target is
green and the other two red, and every other block is its floor or wall colour: every choice is accepted.
Consistency with the walk is not in the final frame: the process score (a target green only if the agent
stood on it) and the behaviour probe's working memory (`recalled`: the target the video's own walk visited,
green in the last frame after a frame with no trace of it) read it. Partial score: the best IoU over the
three choices of the (block, colour) pairs of agent and targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import ABSENT, PALETTE_ARRAY, Recall, Score, Task, TaskInputError, classify_blocks, with_finals
from .shuttle import AGENT, FLOOR, MIN_DISTANCE, SHUTTLE_COLORS, TARGET, VISITED, WALL, Cell, beside, match_room, room_indices, shuttle_track
from .shuttle_near import steps

N_TARGETS = 3


@dataclass(frozen=True)
class ShuttleChoiceInstance:
    size: int  # room side in blocks, walls included
    seed: int
    start: tuple[int, int]
    targets: tuple[tuple[int, int], ...]  # all at the same distance from the start; the ground truth visits the first
    n_frames: int = 8
    cell_px: int = 8

    def __post_init__(self) -> None:
        d = {steps(self.start, t) for t in self.targets}
        if len(set(self.targets)) != len(self.targets) or len(self.targets) < 2 or len(d) != 1 or self.start in self.targets:
            raise TaskInputError(f"shuttle_choice needs >= 2 distinct targets off the start at one distance, got start "
                                 f"{self.start} targets {self.targets}")


def choice_track(start: Cell, target: Cell, n_frames: int) -> list[Cell]:
    """The agent's block per frame: out to `target` by (T-2)//2, back on the start by T-2, there in T-1."""
    return shuttle_track(start, target, n_frames - 1) + [start]


def visit_frame(n_frames: int) -> int:
    return (n_frames - 2) // 2


class ShuttleChoiceTask(Task[ShuttleChoiceInstance]):
    name = "shuttle_choice"
    instance_type = ShuttleChoiceInstance
    default_size = 9
    sizes = tuple(range(7, 22))
    description = "Walk the blue agent to any one of three equally near red targets and back; mark the one visited."
    colors = SHUTTLE_COLORS
    scene_colors = (WALL,)
    background = FLOOR

    def generate(self, seed: int, size: int | None = None, *, n_frames: int = 8, cell_px: int = 8,
                 **kw: Any) -> ShuttleChoiceInstance:
        try:
            n = self.check_generate_args(size, n_frames, kw, size_what="room side in blocks", min_frames=4,
                                         frames_why="start, target, a frame with no trace of the choice, the mark")
        except ValueError as e:
            raise TaskInputError(str(e)) from None
        rng = np.random.default_rng([seed, n])
        cells = [(r, c) for r in range(1, n - 1) for c in range(1, n - 1)]
        while True:  # a start and a distance with at least three blocks at it
            start = cells[int(rng.integers(len(cells)))]
            by_d: dict[int, list[Cell]] = {}
            for p in cells:
                if steps(p, start) >= MIN_DISTANCE:
                    by_d.setdefault(steps(p, start), []).append(p)
            ds = sorted(d for d, ps in by_d.items() if len(ps) >= N_TARGETS)
            if ds:
                ring = by_d[ds[int(rng.integers(len(ds)))]]
                targets = tuple(ring[int(i)] for i in rng.choice(len(ring), N_TARGETS, replace=False))
                return ShuttleChoiceInstance(n, int(seed), start, targets, n_frames, cell_px)

    def room(self, inst: ShuttleChoiceInstance, agents: tuple[Cell, ...], colors: tuple[str | None, ...]) -> np.ndarray:
        """(size, size) palette indices with each target in its colour (None: floor)."""
        return room_indices(inst.size, agents, inst.targets[0], colors[0], tuple(zip(inst.targets[1:], colors[1:])))

    def marked(self, inst: ShuttleChoiceInstance, chosen: int) -> tuple[str, ...]:
        return tuple(VISITED if k == chosen else TARGET for k in range(len(inst.targets)))

    def blocks(self, inst: ShuttleChoiceInstance) -> np.ndarray:
        return self.choice_blocks(inst, 0)

    def choice_blocks(self, inst: ShuttleChoiceInstance, chosen: int, marked: int | None = None) -> np.ndarray:
        """The block video that visits target `chosen` and marks target `marked` (default: the visited one) green."""
        k = len(inst.targets)
        track = choice_track(inst.start, inst.targets[chosen], inst.n_frames)
        t_v, t_last = visit_frame(inst.n_frames), inst.n_frames - 1
        mark = self.marked(inst, chosen if marked is None else marked)
        frames = [self.room(inst, (a,), (TARGET,) * k if t <= t_v else mark if t == t_last else (None,) * k)
                  for t, a in enumerate(track)]
        return PALETTE_ARRAY[np.stack(frames)]

    def prompt(self, inst: ShuttleChoiceInstance) -> str:
        return ("A blue agent and three red targets, all equally far from it, in a walled room. Walk the agent to any one "
                "of them; then the targets disappear while the agent walks back to exactly the block where it started. "
                "In the last frame the targets come back: show the one the agent visited in green and the other two in red.")

    def recall(self, inst: ShuttleChoiceInstance) -> Recall:
        """The visited target marked green: which one is the model's own choice, made in its generated frames."""
        return Recall("the visited target marked green after every trace of the visit is gone", VISITED, inst.targets[0],
                      tuple(range(1, inst.n_frames - 1)), ABSENT,
                      "the targets are equally far, so frame 0 does not say which to visit: the choice is in the model's "
                      "own walk, which the frames before the last no longer show", chance=1 / len(inst.targets))

    def recalled(self, inst: ShuttleChoiceInstance, video: np.ndarray) -> tuple[int, int] | None:
        """The target the video's own walk visited first, if a later frame before the last shows no trace of it
        (no target drawn, the agent on none): the block the last frame must mark. None: no visit, or no gap."""
        cls = np.stack([classify_blocks(np.asarray(f, dtype=np.float32), self.colors) for f in video])
        agent, drawn = SHUTTLE_COLORS.index(AGENT), [SHUTTLE_COLORS.index(c) for c in (TARGET, VISITED)]
        for t in range(1, len(cls) - 1):
            on = [g for g in inst.targets if cls[t][g] == agent]
            if on:
                for u in range(t + 1, len(cls) - 1):
                    if not any(cls[u][g] in drawn or cls[u][g] == agent for g in inst.targets):
                        return on[0]
                return None
        return None

    def forgetful(self, inst: ShuttleChoiceInstance) -> np.ndarray:
        """Visits the first target, marks the second: right in every frame, inconsistent with its own walk."""
        return self.choice_blocks(inst, 0, marked=1)

    def final_indices(self, inst: ShuttleChoiceInstance, chosen: int = 0) -> np.ndarray:
        return self.room(inst, (inst.start,), self.marked(inst, chosen))

    def violations(self, inst: ShuttleChoiceInstance) -> dict[str, np.ndarray]:
        """Named block videos whose final frame breaks the rule in one specific way (all must fail)."""
        s, g, k = inst.start, inst.targets[0], len(inst.targets)
        finals = {
            "visited_all": self.room(inst, (s,), (VISITED,) * k),
            "two_marked": self.room(inst, (s,), (VISITED, VISITED) + (TARGET,) * (k - 2)),
            "none_marked": self.room(inst, (s,), (TARGET,) * k),
            "targets_kept_hidden": self.room(inst, (s,), (None,) * k),
            "target_erased": self.room(inst, (s,), (VISITED, None) + (TARGET,) * (k - 2)),
            "stayed_at_target": self.room(inst, (g,), self.marked(inst, 0)),
            "off_by_one": self.room(inst, (beside(inst.size, s, inst.targets),), self.marked(inst, 0)),
            "two_agents": self.room(inst, (s, beside(inst.size, s, inst.targets)), self.marked(inst, 0)),
        }
        return with_finals(self.blocks(inst), finals)

    def score_blocks(self, inst: ShuttleChoiceInstance, final: np.ndarray, video: np.ndarray) -> Score:
        best: tuple[bool, float, int] = (False, -1.0, 0)
        for k in range(len(inst.targets)):
            cls, want, iou = match_room(self.name, final, self.final_indices(inst, k))
            ok = bool(np.array_equal(cls, want))
            if (ok, iou) > best[:2]:
                best = (ok, iou, k)
        cls = classify_blocks(final, SHUTTLE_COLORS)
        details = {
            "agent_blocks": [[int(r), int(c)] for r, c in np.argwhere(cls == SHUTTLE_COLORS.index(AGENT))],
            "start": list(inst.start),
            "marked": [list(t) for t in inst.targets if cls[t] == SHUTTLE_COLORS.index(VISITED)],
            "closest_choice": list(inst.targets[best[2]]),
            "unclassified": int((cls < 0).sum()),
        }
        return Score(best[0], float(best[1]), details)
