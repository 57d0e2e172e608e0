"""Occlusion (working memory): a red block moves at constant speed behind a gray occluder and out again.

The grid is 5 rows by `size` columns, white. The red object moves along the middle row by `speed`
blocks per frame (1 to 3) towards a gray occluder (rows 1..3). Frame 0 shows a cyan trail of
`speed` blocks behind the object: where it came from, so the first frame alone gives its speed and
direction. While the object is under the occluder it is not drawn; it is hidden in the frame
before the last (and in 0..T-3 frames before that) and comes out in the last frame. The object's
column at frame t is `start + direction * speed * t`: a function of frame 0 alone, which an
image-to-video model is given at every frame, so drawing it where it comes out needs no memory
(`recall` declares it computable from the conditioning; `shuttle_choice` is the task where memory is
measurable).

Generator version 2 (the default) adds three static distractor blocks, each blue or yellow, in the
rows above and below the occluder (rows 0 and 4); they never move and must be left where they are.
Version 1 (`generate(..., version=1)`) draws the old scenes without them, seed for seed.

Scoring (final frame only): success iff the one red block is exactly at the final position, the
occluder and the distractors are intact and every other block is white (no trail, no off-palette block). Failure
examples: the object stopped before or inside the occluder, one block short or past the target,
drawn on top of the occluder, vanished, the occluder removed, or a distractor moved or erased. Partial score: IoU of the red
blocks with the expected red block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import COLOR_INDEX, COMPUTABLE, PALETTE_ARRAY, Recall, Score, Task, TaskInputError, classify_blocks, with_finals

BG, OBJECT, OCCLUDER, TRAIL = "white", "red", "gray", "cyan"
DISTRACTOR_COLORS = ("blue", "yellow")  # static blocks (version 2): colours the task uses for nothing else
OCCLUSION_COLORS = (BG, OBJECT, OCCLUDER, TRAIL, *DISTRACTOR_COLORS)
N_DISTRACTORS = 3
ROWS, ROW = 5, 2  # grid height; the object's row
OCC_ROWS = (1, 4)  # occluder rows [1, 4): taller than the object, so it reads as in front
SPEEDS = (1, 2, 3)


@dataclass(frozen=True)
class OcclusionInstance:
    width: int  # grid columns
    seed: int
    start: int  # object column at frame 0
    speed: int  # blocks per frame
    direction: int  # +1 right, -1 left
    occluder: tuple[int, int]  # first and last occluded column
    n_frames: int = 8
    cell_px: int = 8
    distractors: tuple[tuple[tuple[int, int], str], ...] = ()  # ((row, column), colour) of static blocks (version 2)


def position(inst: OcclusionInstance, t: int) -> int:
    return inst.start + inst.direction * inst.speed * t


def hidden(inst: OcclusionInstance, col: int) -> bool:
    return inst.occluder[0] <= col <= inst.occluder[1]


def scene_indices(inst: OcclusionInstance, obj: int | None, *, trail: bool = False, occluder: bool = True) -> np.ndarray:
    """(ROWS, width) palette indices with the object at column `obj` (None: absent), drawn behind the occluder."""
    idx = np.full((ROWS, inst.width), COLOR_INDEX[BG], dtype=np.int64)
    for cell, color in inst.distractors:
        idx[cell] = COLOR_INDEX[color]
    if trail:
        for k in range(1, inst.speed + 1):
            idx[ROW, inst.start - inst.direction * k] = COLOR_INDEX[TRAIL]
    if obj is not None:
        idx[ROW, obj] = COLOR_INDEX[OBJECT]
    if occluder:
        a, b = inst.occluder
        idx[OCC_ROWS[0] : OCC_ROWS[1], a : b + 1] = COLOR_INDEX[OCCLUDER]
    return idx


def fitting_speeds(width: int, n_frames: int) -> list[int]:
    """Speeds whose trail and whole trip fit in `width` columns."""
    return [v for v in SPEEDS if v + 1 + v * (n_frames - 1) <= width]


class OcclusionTask(Task[OcclusionInstance]):
    name = "occlusion"
    instance_type = OcclusionInstance
    default_size = 12
    sizes = tuple(range(9, 17))
    description = "Keep track of a block moving behind an occluder; show where it comes out."
    colors = OCCLUSION_COLORS
    scene_colors = (OCCLUDER, *DISTRACTOR_COLORS)
    background = BG
    generator_version: ClassVar[int] = 2

    def generate(self, seed: int, size: int | None = None, *, version: int | None = None, n_frames: int = 8, cell_px: int = 8,
                 **kw: Any) -> OcclusionInstance:
        """Version 2 (default) adds the static distractors; version 1 reproduces the old generator's scenes exactly."""
        version = self.check_version(version)
        w = self.check_generate_args(size, n_frames, kw, size_what="grid columns", min_frames=3, frames_why="visible, hidden, visible")
        speeds = fitting_speeds(w, n_frames)
        if not speeds:
            raise ValueError(f"occlusion: {n_frames} frames need at least {2 + n_frames - 1} columns, got size {w}")
        rng = np.random.default_rng([seed, w])
        v = speeds[int(rng.integers(len(speeds)))]
        d = (-1, 1)[int(rng.integers(2))]
        span = v * (n_frames - 1)
        lo, hi = (v, w - 1 - span) if d > 0 else (span, w - 1 - v)
        start = int(rng.integers(lo, hi + 1))
        # hidden in frames T-1-h .. T-2; slack (< speed) on either side never covers a visible position
        h = int(rng.integers(1, n_frames - 1))
        slack_in, slack_out = int(rng.integers(v)), int(rng.integers(v))
        first = start + d * v * (n_frames - 1 - h) - d * slack_in
        last = start + d * v * (n_frames - 2) + d * slack_out
        distractors: tuple[tuple[tuple[int, int], str], ...] = ()
        if version >= 2:
            free = [(r, c) for r in (0, ROWS - 1) for c in range(w)]  # off the object's row and the occluder's rows
            picks = sorted(int(i) for i in rng.choice(len(free), size=N_DISTRACTORS, replace=False))
            distractors = tuple((free[i], DISTRACTOR_COLORS[int(rng.integers(len(DISTRACTOR_COLORS)))]) for i in picks)
        return OcclusionInstance(w, int(seed), start, v, d, (min(first, last), max(first, last)), n_frames, cell_px, distractors)

    def blocks(self, inst: OcclusionInstance) -> np.ndarray:
        video = np.stack([scene_indices(inst, position(inst, t), trail=t == 0) for t in range(inst.n_frames)])
        return PALETTE_ARRAY[video]

    def prompt(self, inst: OcclusionInstance) -> str:
        side = "right" if inst.direction > 0 else "left"
        return (
            f"A red block moves {side} at a constant {inst.speed} block{'s' if inst.speed > 1 else ''} per frame "
            "(the cyan trail shows its last step) and passes behind the gray wall. Show it where it comes out in the last frame; the wall stays"
            + (f", and so do the {' and '.join(sorted({c for _, c in inst.distractors}))} blocks." if inst.distractors else ".")
        )

    def violations(self, inst: OcclusionInstance) -> dict[str, np.ndarray]:
        """Named block videos whose final frame breaks the rule in one specific way (all must fail)."""
        t_last = inst.n_frames - 1
        goal, d = position(inst, t_last), inst.direction
        before = next(position(inst, t) for t in range(t_last, -1, -1) if t < t_last and not hidden(inst, position(inst, t)))
        finals = {
            "stopped_before": scene_indices(inst, before),
            "vanished": scene_indices(inst, None),
            "occluder_removed": scene_indices(inst, goal, occluder=False),
            "trail_kept": scene_indices(inst, goal, trail=True),
        }
        if not hidden(inst, goal - d):
            finals["one_short"] = scene_indices(inst, goal - d)
        if 0 <= goal + d < inst.width:
            finals["one_past"] = scene_indices(inst, goal + d)
        if inst.distractors:
            (r, c), color = inst.distractors[0]
            taken = {cell for cell, _ in inst.distractors}
            to = next((r2, c2) for r2 in (0, ROWS - 1) for c2 in range(inst.width) if (r2, c2) not in taken)
            moved = scene_indices(inst, goal)
            moved[r, c], moved[to] = COLOR_INDEX[BG], COLOR_INDEX[color]
            finals["distractor_moved"] = moved
            erased = scene_indices(inst, goal)
            erased[r, c] = COLOR_INDEX[BG]
            finals["distractor_erased"] = erased
        in_front = scene_indices(inst, None)
        in_front[ROW, position(inst, t_last - 1)] = COLOR_INDEX[OBJECT]  # seen through the occluder
        finals["in_front"] = in_front
        return with_finals(self.blocks(inst), finals)

    def recall(self, inst: OcclusionInstance) -> Recall:
        """The object where it comes out: a place it has never been, but a function of frame 0 alone."""
        t_last = inst.n_frames - 1
        return Recall("the object where it comes out from behind the occluder", OBJECT, (ROW, position(inst, t_last)),
                      tuple(range(1, t_last)), COMPUTABLE,
                      "frame 0, the given frame the model sees at every frame, shows the object's column and, by its "
                      "cyan trail, its speed and direction, so its column in the last frame (start + direction * speed * "
                      "(T - 1)) is computed from the conditioning; nothing needs carrying through the hidden frames")

    def score_blocks(self, inst: OcclusionInstance, final: np.ndarray, video: np.ndarray) -> Score:
        if final.shape[:2] != (ROWS, inst.width):
            raise TaskInputError(f"occlusion width {inst.width} needs a {ROWS}x{inst.width} block grid, got {final.shape[:2]}")
        cls = classify_blocks(final, OCCLUSION_COLORS)
        want_idx = scene_indices(inst, position(inst, inst.n_frames - 1))
        want = np.full(want_idx.shape, -1, dtype=np.int64)
        for i, c in enumerate(OCCLUSION_COLORS):
            want[want_idx == COLOR_INDEX[c]] = i
        red, want_red = cls == OCCLUSION_COLORS.index(OBJECT), want == OCCLUSION_COLORS.index(OBJECT)
        union = int((red | want_red).sum())
        iou = float((red & want_red).sum() / union) if union else 1.0
        occ = want == OCCLUSION_COLORS.index(OCCLUDER)
        details = {
            "red_columns": [int(c) for c in np.argwhere(red)[:, 1]],
            "expected_column": position(inst, inst.n_frames - 1),
            "occluder_intact": bool(np.all(cls[occ] == OCCLUSION_COLORS.index(OCCLUDER))),
            "wrong_blocks": int((cls != want).sum()),
            "unclassified": int((cls < 0).sum()),
        }
        return Score(bool(np.array_equal(cls, want)), iou, details)
