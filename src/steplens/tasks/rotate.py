"""Rotate: turn a polyomino 90 degrees clockwise about its marked pivot block.

On an n x n white grid (n is the size) lies a blue piece, a polyomino of four to six blocks
(rotate_large: six or seven) without a rotational or mirror symmetry (so every quarter turn looks
different and a mirrored turn is never right), in a random orientation and reflection. One of its
blocks, the pivot, is yellow and stays where it is. Frames show the piece turning: at frame t every
block's offset from the pivot is rotated clockwise by 90 * t / (T-1) degrees and rounded to the
grid; the last frame shows the quarter turn. The generator only places the piece where every frame,
and also the counter-clockwise and half turns, stay on the grid. Generator version 1 (the models'
training draws) used only the L, P, F, N and Y pieces of SHAPES (rotate_large: LARGE_SHAPES);
version 2 draws every such polyomino (rotate: the six old pieces and the 20 such hexominoes;
rotate_large: the 20 hexominoes and 84 heptominoes).

Scoring (final frame only): success iff the blue blocks are exactly the piece's other blocks
rotated 90 degrees clockwise about the pivot, the pivot block is still yellow, and every other
block is white (no off-palette block). Failure examples: a counter-clockwise or 180-degree turn, a
mirrored piece, the right shape shifted by a block, the pivot recoloured, a second yellow block, the
unrotated piece. Partial score: IoU of the blue blocks with the expected blue blocks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

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


Cells = tuple[tuple[int, int], ...]


def _canonical(cells: Cells | list[tuple[int, int]]) -> Cells:
    """The blocks shifted to touch row 0 and column 0, sorted."""
    r0, c0 = min(r for r, _ in cells), min(c for _, c in cells)
    return tuple(sorted((r - r0, c - c0) for r, c in cells))


def _quarter_turns(cells: Cells) -> set[Cells]:
    """The piece's four quarter turns (canonical); fewer than four where it has a rotational symmetry."""
    out, cur = set(), _canonical(cells)
    for _ in range(4):
        out.add(cur)
        cur = _canonical([(c, -r) for r, c in cur])
    return out


def turn_distinct_polyominoes(n_blocks: int) -> dict[str, Cells]:
    """Every free polyomino of `n_blocks` blocks whose quarter turns all differ and none of which is its mirror image.

    Named f"{n_blocks}-{i:02d}" in the order of their least canonical form (deterministic); cells as that form.
    """
    polys: set[Cells] = {((0, 0),)}
    for _ in range(n_blocks - 1):
        polys = {_canonical(p + (q,)) for p in polys for r, c in p
                 for q in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)) if q not in p}
    free: set[Cells] = set()
    for p in polys:
        turns, mirrored = _quarter_turns(p), _quarter_turns(tuple((r, -c) for r, c in p))
        if len(turns) == 4 and not turns & mirrored:
            free.add(min(turns | mirrored))
    return {f"{n_blocks}-{i:02d}": p for i, p in enumerate(sorted(free))}


def _with_new(old: dict[str, Cells], *families: dict[str, Cells]) -> dict[str, Cells]:
    """`old`'s pieces under their names, then every piece of `families` that is none of them (as a free polyomino)."""
    def free_form(p: Cells) -> Cells:
        return min(_quarter_turns(p) | _quarter_turns(tuple((r, -c) for r, c in p)))
    known = {free_form(p) for p in old.values()}
    out = dict(old)
    for fam in families:
        out.update({k: p for k, p in fam.items() if free_form(p) not in known})
    return out


# generator version 2: every four- to six-block piece (rotate), every six- or seven-block piece (rotate_large)
SHAPES_V2: dict[str, Cells] = _with_new(SHAPES, turn_distinct_polyominoes(6))
LARGE_SHAPES_V2: dict[str, Cells] = _with_new(LARGE_SHAPES, turn_distinct_polyominoes(6), turn_distinct_polyominoes(7))


@dataclass(frozen=True)
class RotateInstance:
    size: int  # grid side in blocks
    seed: int
    shape: str  # key of the task's shapes for its generator version (SHAPES_V2 / LARGE_SHAPES_V2, version 1: SHAPES / LARGE_SHAPES)
    cells: tuple[tuple[int, int], ...]  # the piece's blocks (pivot included), sorted
    pivot: tuple[int, int]
    n_frames: int = 8
    cell_px: int = 8


def turn(offsets: np.ndarray, quarter: float) -> np.ndarray:
    """Offsets (..., 2) rotated clockwise by `quarter` quarter-turns on screen (rows down), rounded."""
    a = quarter * np.pi / 2
    r, c = offsets[..., 0], offsets[..., 1]
    # clockwise on screen: right (0, 1) -> down (1, 0), up (-1, 0) -> right (0, 1)
    out = np.stack([r * np.cos(a) + c * np.sin(a), -r * np.sin(a) + c * np.cos(a)], axis=-1)
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


def pivot_range(rel: np.ndarray, n: int, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) (row, col) of the pivot places where a piece with offsets `rel` (..., K, 2) from its pivot stays on an n x n grid.

    Every frame, and the wrong (counter-clockwise, half) turns, must fit wherever the pivot goes, so the grid's edge
    never hints at the direction and every violation is drawable; lo > hi where no place fits.
    """
    quarters = [t / (n_frames - 1) for t in range(n_frames)] + [-1.0, 2.0]
    swept = np.concatenate([turn(rel, q) for q in quarters], axis=-2)
    return -swept.min(axis=-2), n - 1 - swept.max(axis=-2)


@functools.lru_cache(maxsize=64)
def _poses(shapes: tuple[tuple[str, Cells], ...], n: int, n_frames: int) -> tuple[list[str], list[Cells], list[tuple[int, int]],
                                                                                 list[tuple[int, int]], np.ndarray]:
    """Every pose (piece, reflection, quarter turn, pivot block) that fits the grid: names, offsets from the pivot,
    the pivot's least place, the (rows, cols) of its places, and the running count of instances (cumulative places)."""
    names, rels, los, dims = [], [], [], []
    for name, blocks in shapes:
        for mirror in (False, True):
            base = np.array(blocks, dtype=np.float64)
            if mirror:
                base[:, 1] = -base[:, 1]
            for q in range(4):
                turned = turn(base, q).astype(np.float64)
                rel_all = turned[None, :, :] - turned[:, None, :]  # (pivot block, block, 2)
                lo_all, hi_all = pivot_range(rel_all, n, n_frames)
                for rel, lo, hi in zip(rel_all, lo_all, hi_all):
                    if np.any(lo > hi):
                        continue
                    names.append(name)
                    rels.append(tuple((int(r), int(c)) for r, c in rel))
                    los.append((int(lo[0]), int(lo[1])))
                    dims.append((int(hi[0] - lo[0] + 1), int(hi[1] - lo[1] + 1)))
    if not names:  # pragma: no cover - every piece fits the smallest size (test)
        raise ValueError(f"rotate: no piece fits a {n}x{n} grid")
    return names, rels, los, dims, np.cumsum([r * c for r, c in dims])


class RotateTask(Task[RotateInstance]):
    name = "rotate"
    instance_type = RotateInstance
    default_size = 9
    sizes = tuple(range(7, 16))
    description = "Rotate the blue piece 90 degrees clockwise about its yellow pivot block."
    colors = ROTATE_COLORS
    scene_colors = (PIVOT,)
    background = BG
    generator_version: ClassVar[int] = 2
    shapes_by_version: ClassVar[dict[int, dict[str, Cells]]] = {1: SHAPES, 2: SHAPES_V2}

    @property
    def shapes(self) -> dict[str, Cells]:
        """The pieces the current generator draws."""
        return self.shapes_by_version[self.generator_version]

    def generate(self, seed: int, size: int | None = None, *, version: int | None = None, n_frames: int = 8, cell_px: int = 8,
                 **kw: Any) -> RotateInstance:
        n = self.check_generate_args(size, n_frames, kw, size_what="grid side in blocks")
        v = self.check_version(version)
        shapes = self.shapes_by_version[v]
        rng = np.random.default_rng([seed, n])
        if v == 1:
            return self._generate_v1(rng, shapes, seed, n, n_frames, cell_px)
        # version 2: uniform over every distinct instance (piece, reflection, turn, pivot block, place)
        names, rels, los, dims, ends = _poses(tuple(sorted(shapes.items())), n, n_frames)
        k = int(rng.integers(ends[-1]))
        i = int(np.searchsorted(ends, k, side="right"))
        place = k - (int(ends[i - 1]) if i else 0)
        pivot = (los[i][0] + place // dims[i][1], los[i][1] + place % dims[i][1])
        cells = tuple(sorted((r + pivot[0], c + pivot[1]) for r, c in rels[i]))
        return RotateInstance(n, int(seed), names[i], cells, pivot, n_frames, cell_px)

    def _generate_v1(self, rng: np.random.Generator, shapes: dict[str, Cells], seed: int, n: int, n_frames: int,
                     cell_px: int) -> RotateInstance:
        """Generator version 1 (the shipped models' training draws): piece, reflection, turn, pivot, then a place, one by one."""
        names = sorted(shapes)
        shape = names[int(rng.integers(len(names)))]
        base = np.array(shapes[shape], dtype=np.float64)
        if rng.integers(2):
            base[:, 1] = -base[:, 1]  # mirror image
        base = turn(base, int(rng.integers(4))).astype(np.float64)
        rel = base - base[int(rng.integers(len(base)))]  # offsets from the pivot
        lo, hi = pivot_range(rel, n, n_frames)
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
    shapes_by_version: ClassVar[dict[int, dict[str, Cells]]] = {1: LARGE_SHAPES, 2: LARGE_SHAPES_V2}
