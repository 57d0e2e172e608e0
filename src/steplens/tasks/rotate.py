"""Rotate: turn a polyomino 90 degrees clockwise about its marked pivot block.

On an n x n white grid (n is the size) lies a blue piece, an L, P, F, N or Y polyomino (none has
a rotational symmetry, so every quarter turn looks different), in a random orientation and
reflection. One of its blocks, the pivot, is yellow and stays where it is. Frames show the piece
turning: at frame t every block's offset from the pivot is rotated clockwise by 90 * t / (T-1)
degrees and rounded to the grid; the last frame shows the quarter turn. The generator only places
the piece where every frame, and also the counter-clockwise and half turns, stay on the grid.

Scoring (final frame only): success iff the blue blocks are exactly the piece's other blocks
rotated 90 degrees clockwise about the pivot, the pivot block is still yellow, and every other
block is white (no off-palette block). Failure examples: a counter-clockwise or 180-degree turn, a
mirrored piece, the right shape shifted by a block, the pivot recoloured, a second yellow block, the
unrotated piece. Partial score: IoU of the blue blocks with the expected blue blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import COLOR_INDEX, PALETTE_ARRAY, Score, Task, TaskInputError, classify_blocks

BG, PIECE, PIVOT = "white", "blue", "yellow"
ROTATE_COLORS = (BG, PIECE, PIVOT)
# (row, col) blocks of each free polyomino; all are chiral and without rotational symmetry
SHAPES: dict[str, tuple[tuple[int, int], ...]] = {
    "L4": ((0, 0), (1, 0), (2, 0), (2, 1)),
    "L5": ((0, 0), (1, 0), (2, 0), (3, 0), (3, 1)),
    "P": ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0)),
    "F": ((0, 1), (0, 2), (1, 0), (1, 1), (2, 1)),
    "N": ((0, 0), (1, 0), (1, 1), (2, 1), (3, 1)),
    "Y": ((0, 1), (1, 0), (1, 1), (2, 1), (3, 1)),
}
# rotate_large's pieces: six or seven blocks, up to five long (more blocks to move, longer arms to
# swing), again all chiral and without rotational symmetry
LARGE_SHAPES: dict[str, tuple[tuple[int, int], ...]] = {
    "L6": ((0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (4, 1)),
    "N6": ((0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (4, 1)),
    "Y6": ((0, 1), (1, 0), (1, 1), (2, 1), (3, 1), (4, 1)),
    "P6": ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 0)),
    "F6": ((0, 1), (0, 2), (1, 0), (1, 1), (2, 1), (3, 1)),
    "P7": ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 0), (4, 0)),
    "h7": ((0, 0), (1, 0), (2, 0), (2, 1), (3, 1), (3, 2), (4, 2)),
}


@dataclass(frozen=True)
class RotateInstance:
    size: int  # grid side in blocks
    seed: int
    shape: str  # key of the task's shapes (SHAPES, or LARGE_SHAPES for rotate_large)
    cells: tuple[tuple[int, int], ...]  # the piece's blocks (pivot included), sorted
    pivot: tuple[int, int]
    n_frames: int = 8
    cell_px: int = 8


def turn(offsets: np.ndarray, quarter: float) -> np.ndarray:
    """Offsets (K, 2) rotated clockwise by `quarter` quarter-turns on screen (rows down), rounded."""
    a = quarter * np.pi / 2
    r, c = offsets[:, 0], offsets[:, 1]
    # clockwise on screen: right (0, 1) -> down (1, 0), up (-1, 0) -> right (0, 1)
    out = np.stack([r * np.cos(a) + c * np.sin(a), -r * np.sin(a) + c * np.cos(a)], axis=1)
    # round half up with a tolerance, so float noise at exact halves (sin 30 deg) cannot flip a block
    return np.floor(out + 0.5 + 1e-9).astype(np.int64)


def rotated_cells(cells: tuple[tuple[int, int], ...], pivot: tuple[int, int], quarter: float) -> set[tuple[int, int]]:
    rel = np.array(cells, dtype=np.float64) - np.array(pivot)
    return {(int(r) + pivot[0], int(c) + pivot[1]) for r, c in turn(rel, quarter)}


def piece_indices(size: int, cells: set[tuple[int, int]] | tuple[tuple[int, int], ...], pivot: tuple[int, int] | None) -> np.ndarray:
    """(size, size) palette indices: white, blue `cells`, the yellow pivot on top."""
    idx = np.full((size, size), COLOR_INDEX[BG], dtype=np.int64)
    for p in cells:
        idx[p] = COLOR_INDEX[PIECE]
    if pivot is not None:
        idx[pivot] = COLOR_INDEX[PIVOT]
    return idx


class RotateTask(Task[RotateInstance]):
    name = "rotate"
    instance_type = RotateInstance
    default_size = 9
    sizes = tuple(range(7, 16))
    description = "Rotate the blue piece 90 degrees clockwise about its yellow pivot block."
    colors = ROTATE_COLORS
    scene_colors = (PIVOT,)
    shapes = SHAPES

    def generate(self, seed: int, size: int | None = None, *, n_frames: int = 8, cell_px: int = 8, **kw: Any) -> RotateInstance:
        n = self.check_generate_args(size, n_frames, kw, size_what="grid side in blocks")
        rng = np.random.default_rng([seed, n])
        names = sorted(self.shapes)
        shape = names[int(rng.integers(len(names)))]
        base = np.array(self.shapes[shape], dtype=np.float64)
        if rng.integers(2):
            base[:, 1] = -base[:, 1]  # mirror image
        base = turn(base, int(rng.integers(4))).astype(np.float64)
        rel = base - base[int(rng.integers(len(base)))]  # offsets from the pivot
        # every frame, and the wrong (counter-clockwise, half) turns, must fit wherever the pivot goes,
        # so the grid's edge never hints at the direction and every violation is drawable
        quarters = [t / (n_frames - 1) for t in range(n_frames)] + [-1.0, 2.0]
        swept = np.concatenate([turn(rel, q) for q in quarters])
        lo, hi = -swept.min(axis=0), n - 1 - swept.max(axis=0)
        if np.any(lo > hi):  # pragma: no cover - every sweep fits the smallest size (test)
            raise ValueError(f"{self.name}: a {shape} does not fit a {n}x{n} grid")
        pivot = (int(rng.integers(lo[0], hi[0] + 1)), int(rng.integers(lo[1], hi[1] + 1)))
        cells = tuple(sorted((int(r) + pivot[0], int(c) + pivot[1]) for r, c in rel))
        return RotateInstance(n, int(seed), shape, cells, pivot, n_frames, cell_px)

    def target_cells(self, inst: RotateInstance) -> set[tuple[int, int]]:
        """Blue blocks of the solved frame (the pivot excluded)."""
        return rotated_cells(inst.cells, inst.pivot, 1.0) - {inst.pivot}

    def blocks(self, inst: RotateInstance) -> np.ndarray:
        t_last = inst.n_frames - 1
        video = np.stack([piece_indices(inst.size, rotated_cells(inst.cells, inst.pivot, t / t_last), inst.pivot) for t in range(inst.n_frames)])
        return PALETTE_ARRAY[video]

    def prompt(self, inst: RotateInstance) -> str:
        return (
            "A blue piece with one yellow block. Rotate the whole piece 90 degrees clockwise about the yellow block, "
            "which stays where it is; leave the rest of the grid white."
        )

    def violations(self, inst: RotateInstance) -> dict[str, np.ndarray]:
        """Named block videos whose final frame breaks the rule in one specific way (all must fail)."""
        n, pv = inst.size, inst.pivot
        good = self.target_cells(inst)
        pr, pc = pv
        dc = 1 if max(c for _, c in good | {pv}) < n - 1 else -1  # shift right unless that leaves the grid
        free = next(p for p in ((0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1)) if p not in good and p != pv)
        candidates: dict[str, tuple[set[tuple[int, int]], tuple[int, int] | None]] = {
            "counterclockwise": (rotated_cells(inst.cells, pv, -1.0), pv),
            "half_turn": (rotated_cells(inst.cells, pv, 2.0), pv),
            "mirrored": ({(r, 2 * pc - c) for r, c in good}, pv),  # the solution flipped left-right about the pivot
            "shifted": ({(r, c + dc) for r, c in good}, (pr, pc + dc)),
            "pivot_recoloured": (good | {pv}, None),
            "extra_block": (good | {free}, pv),
        }
        truth = self.blocks(inst)
        out = {}
        for name, (cells, pivot) in candidates.items():
            blue = set(cells) - ({pivot} if pivot else set())
            inside = all(0 <= r < n and 0 <= c < n for r, c in blue | ({pivot} if pivot else set()))
            if not inside or (blue == good and pivot == pv):  # off the grid, or (by symmetry) the solution itself
                continue
            video = truth.copy()
            video[-1] = PALETTE_ARRAY[piece_indices(n, blue, pivot)]
            out[name] = video
        video = truth.copy()
        video[-1, free[0], free[1]] = PALETTE_ARRAY[COLOR_INDEX[PIVOT]]  # the solution plus a second yellow block
        out["second_pivot"] = video
        return out

    def score_blocks(self, inst: RotateInstance, final: np.ndarray, video: np.ndarray) -> Score:
        n = inst.size
        if final.shape[:2] != (n, n):
            raise TaskInputError(f"rotate size {n} needs a {n}x{n} block grid, got {final.shape[:2]}")
        cls = classify_blocks(final, ROTATE_COLORS)
        blue = cls == ROTATE_COLORS.index(PIECE)
        want = np.zeros((n, n), dtype=bool)
        for p in self.target_cells(inst):
            want[p] = True
        pivot_ok = bool(cls[inst.pivot] == ROTATE_COLORS.index(PIVOT))
        rest = np.ones((n, n), dtype=bool)
        rest[want] = False
        rest[inst.pivot] = False
        rest_white = bool(np.all(cls[rest] == ROTATE_COLORS.index(BG)))
        union = int((blue | want).sum())
        iou = float((blue & want).sum() / union) if union else 1.0
        details = {
            "blue_blocks": int(blue.sum()),
            "expected_blocks": int(want.sum()),
            "missing": int((want & ~blue).sum()),
            "extra": int((blue & ~want).sum()),
            "pivot_present": pivot_ok,
            "unclassified": int((cls < 0).sum()),
        }
        return Score(bool(np.array_equal(blue, want) and pivot_ok and rest_white), iou, details)


class RotateLargeTask(RotateTask):
    """Rotate's harder variant: the same rule and scorer with six- and seven-block pieces up to five long."""

    name = "rotate_large"
    default_size = 11
    sizes = tuple(range(9, 16))
    description = "Rotate the large blue piece (six or seven blocks) 90 degrees clockwise about its yellow pivot block."
    shapes = LARGE_SHAPES
