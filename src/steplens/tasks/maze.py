"""Maze: draw the path from the green start to the red goal through a perfect maze.

A maze of n x m cells is drawn on (2n+1) x (2m+1) blocks: cells at odd (row, col), walls between.
Frame 0 is the puzzle; later frames draw the shortest path progressively; the last shows all of it.

Scoring (final frame): success iff the blue blocks plus start and goal form one simple path from
start to goal through floor blocks only (the induced 4-neighbour graph is a chain whose ends are
start and goal). A perfect maze has exactly one simple path between two cells, so any success is
the shortest path: a "longer valid route" must cross a wall (fails) or revisit a block, which
makes a branch (fails). Partial score: IoU of blue blocks with the true path blocks.

`maze_braid` is a level with loops: the same carving with inner walls removed, so several valid routes lead to the
goal; the braiding is kept only when the shortest route is unique, and success needs that route (`valid_route` in the
details says whether the drawing is any valid route). A model trained on `maze` runs on it with its maze conditioning.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import COLOR_INDEX, IN_CONDITIONING, PALETTE_ARRAY, Recall, Score, Task, TaskInputError, classify_blocks

WALL, FLOOR, START, GOAL, PATH = "black", "white", "green", "red", "blue"
MAZE_COLORS = (WALL, FLOOR, START, GOAL, PATH)


@dataclass(frozen=True)
class MazeInstance:
    rows: int  # cells
    cols: int
    seed: int
    grid: tuple[str, ...]  # block rows, '#' wall and '.' floor, (2*rows+1) x (2*cols+1)
    start: tuple[int, int]  # block coordinates
    goal: tuple[int, int]
    n_frames: int = 8
    cell_px: int = 8


def carve(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A perfect maze (randomised depth-first backtracker): bool floor mask of (2r+1, 2c+1) blocks."""
    floor = np.zeros((2 * rows + 1, 2 * cols + 1), dtype=bool)
    seen = np.zeros((rows, cols), dtype=bool)
    stack = [(0, 0)]
    seen[0, 0] = True
    floor[1, 1] = True
    steps = ((-1, 0), (1, 0), (0, -1), (0, 1))
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in steps if 0 <= r + dr < rows and 0 <= c + dc < cols and not seen[r + dr, c + dc]]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[int(rng.integers(len(nbrs)))]
        seen[nr, nc] = True
        floor[2 * nr + 1, 2 * nc + 1] = True
        floor[r + nr + 1, c + nc + 1] = True  # the wall block between the two cells
        stack.append((nr, nc))
    return floor


def path_strength(blocks: np.ndarray) -> np.ndarray:
    """(..., 3) colours in [0, 255] -> (...) path-colour strength in [0, 1]: 1 for path blue, 0 for every other maze colour."""
    b = blocks.astype(np.float32)
    return np.clip((b[..., 2] - np.maximum(b[..., 0], b[..., 1])) / 255.0, 0.0, 1.0)


def floor_mask(inst: MazeInstance) -> np.ndarray:
    return np.array([[ch == "." for ch in row] for row in inst.grid], dtype=bool)


def bfs_path(floor: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """Shortest 4-neighbour path over floor blocks, start and goal included ([] if unreachable)."""
    h, w = floor.shape
    prev: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    q = deque([start])
    while q:
        p = q.popleft()
        if p == goal:
            break
        r, c = p
        for nb in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nb[0] < h and 0 <= nb[1] < w and floor[nb] and nb not in prev:
                prev[nb] = p
                q.append(nb)
    if goal not in prev:
        return []
    path = [goal]
    while (p := prev[path[-1]]) is not None:
        path.append(p)
    return path[::-1]


def solution_mask(inst: MazeInstance) -> np.ndarray:
    """Blocks of the true path, start and goal excluded (what is drawn blue)."""
    mask = np.zeros((2 * inst.rows + 1, 2 * inst.cols + 1), dtype=bool)
    for p in bfs_path(floor_mask(inst), inst.start, inst.goal)[1:-1]:
        mask[p] = True
    return mask


def dead_ends(floor: np.ndarray, exclude: tuple[tuple[int, int], ...] = ()) -> list[tuple[int, int]]:
    """Floor blocks with exactly one floor neighbour (the ends of a perfect maze's corridors), `exclude` left out."""
    m = np.pad(floor, 1).astype(np.int8)
    nbrs = m[:-2, 1:-1] + m[2:, 1:-1] + m[1:-1, :-2] + m[1:-1, 2:]
    return [(int(r), int(c)) for r, c in zip(*np.nonzero(floor & (nbrs == 1))) if (int(r), int(c)) not in exclude]


def is_simple_path(mask: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> bool:
    """True iff the 4-neighbour graph induced by `mask` is one chain with ends `start` and `goal`."""
    if not (mask[start] and mask[goal]) or start == goal:
        return False
    m = mask.astype(np.int8)
    deg = np.zeros_like(m)
    deg[1:] += m[:-1]
    deg[:-1] += m[1:]
    deg[:, 1:] += m[:, :-1]
    deg[:, :-1] += m[:, 1:]
    deg = deg * m
    if deg[start] != 1 or deg[goal] != 1:
        return False
    inner = mask.copy()
    inner[start] = inner[goal] = False
    if np.any(deg[inner] != 2):
        return False
    # degrees alone allow a chain plus separate cycles: require connectivity
    return len(bfs_path(mask, start, goal)) == int(mask.sum())


class MazeTask(Task[MazeInstance]):
    name = "maze"
    instance_type = MazeInstance
    default_size = 5
    sizes = tuple(range(3, 11))
    description = "Draw the shortest path from the green start to the red goal through a perfect maze."
    colors = MAZE_COLORS
    scene_colors = (WALL, START, GOAL)
    background = FLOOR

    def generate(self, seed: int, size: int | tuple[int, int] | None = None, *, n_frames: int = 8, cell_px: int = 8, **kw: Any) -> MazeInstance:
        if kw:
            raise TypeError(f"maze: unknown arguments {sorted(kw)}")
        rows, cols = (size, size) if isinstance(size, int) else (size or (self.default_size, self.default_size))
        for v in (rows, cols):
            if not 3 <= v <= 10:
                raise ValueError(f"maze size must be in 3..10 cells, got {rows}x{cols}")
        if n_frames < 2:
            raise ValueError(f"maze needs n_frames >= 2, got {n_frames}")
        rng = np.random.default_rng([seed, rows, cols])
        floor = carve(rows, cols, rng)
        # goal: a random cell at least half the maze away from the top-left start (Manhattan, in cells)
        rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        far = np.argwhere(rr + cc >= (rows + cols - 2 + 1) // 2)
        gr, gc = far[int(rng.integers(len(far)))]
        grid = tuple("".join("." if v else "#" for v in row) for row in floor)
        return MazeInstance(rows, cols, int(seed), grid, (1, 1), (2 * int(gr) + 1, 2 * int(gc) + 1), n_frames, cell_px)

    def blocks(self, inst: MazeInstance) -> np.ndarray:
        floor = floor_mask(inst)
        idx = np.where(floor, COLOR_INDEX[FLOOR], COLOR_INDEX[WALL]).astype(np.int64)
        idx[inst.start] = COLOR_INDEX[START]
        idx[inst.goal] = COLOR_INDEX[GOAL]
        path = bfs_path(floor, inst.start, inst.goal)[1:-1]
        video = np.empty((inst.n_frames, *idx.shape), dtype=np.int64)
        for t in range(inst.n_frames):
            frame = idx.copy()
            k = int(np.ceil(len(path) * t / (inst.n_frames - 1)))
            for p in path[:k]:
                frame[p] = COLOR_INDEX[PATH]
            video[t] = frame
        return PALETTE_ARRAY[video]

    def prompt(self, inst: MazeInstance) -> str:
        return (
            f"A {inst.rows}x{inst.cols} maze. Starting from the green square in the top-left corner, "
            "draw in blue the shortest path through the white corridors to the red square, without crossing black walls."
        )

    def recall(self, inst: MazeInstance) -> Recall:
        """The start marker, kept in every frame: it never leaves, and it is in the given frame."""
        return Recall("the start and goal markers kept in place", START, inst.start, (), IN_CONDITIONING,
                      "the start and goal markers are drawn in frame 0, the given frame the model sees at every frame, "
                      "so keeping them is copying, not memory")

    def candidates(self, inst: MazeInstance, final: np.ndarray) -> np.ndarray:
        """Blocks lit in path colour at least half way (a faint candidate route counts, as in the Chain-of-Steps metrics)."""
        return path_strength(np.asarray(final)) >= 0.5

    def score_blocks(self, inst: MazeInstance, final: np.ndarray, video: np.ndarray) -> Score:
        hb, wb = 2 * inst.rows + 1, 2 * inst.cols + 1
        if final.shape[:2] != (hb, wb):
            raise TaskInputError(f"maze {inst.rows}x{inst.cols} needs a {hb}x{wb} block grid, got {final.shape[:2]}")
        cls = classify_blocks(final, MAZE_COLORS)
        blue = cls == MAZE_COLORS.index(PATH)
        floor = floor_mask(inst)
        truth = solution_mask(inst)
        start_ok = cls[inst.start] == MAZE_COLORS.index(START)
        goal_ok = cls[inst.goal] == MAZE_COLORS.index(GOAL)
        through_wall = int((blue & ~floor).sum())
        route = blue.copy()
        route[inst.start] = route[inst.goal] = True
        simple = is_simple_path(route, inst.start, inst.goal)
        success = bool(start_ok and goal_ok and through_wall == 0 and simple)
        union = int((blue | truth).sum())
        iou = float((blue & truth).sum() / union) if union else 1.0
        details = {
            "blue_blocks": int(blue.sum()),
            "path_blocks": int(truth.sum()),
            "through_wall": through_wall,
            "start_present": bool(start_ok),
            "goal_present": bool(goal_ok),
            "simple_path": bool(simple),
            "unclassified": int((cls < 0).sum()),
        }
        return Score(success, iou, details)


# -- braided mazes: loops, several valid routes, one shortest ------------------------------------
def count_shortest(floor: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> int:
    """Number of distinct shortest 4-neighbour routes from start to goal over floor blocks (0 if unreachable)."""
    h, w = floor.shape
    dist = {start: 0}
    ways = {start: 1}
    q = deque([start])
    while q:
        p = q.popleft()
        r, c = p
        for nb in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if not (0 <= nb[0] < h and 0 <= nb[1] < w and floor[nb]):
                continue
            if nb not in dist:
                dist[nb], ways[nb] = dist[p] + 1, ways[p]
                q.append(nb)
            elif dist[nb] == dist[p] + 1:
                ways[nb] += ways[p]
    return ways.get(goal, 0)


def longer_route(floor: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """A valid route other than the shortest one: the shortest route once one block of the shortest is walled ([] if none).

    Being shortest in the maze minus that block, it has no chord, so it is a simple path (`is_simple_path`)."""
    path = bfs_path(floor, start, goal)
    for p in path[1:-1]:
        cut = floor.copy()
        cut[p] = False
        if alt := bfs_path(cut, start, goal):
            return alt
    return []


def braid(floor: np.ndarray, n_open: int, rng: np.random.Generator) -> np.ndarray:
    """The perfect maze `floor` with `n_open` random inner walls between two cells removed (each one closes a loop)."""
    h, w = floor.shape
    walls = [(r, c) for r in range(1, h - 1) for c in range(1, w - 1)
             if not floor[r, c] and (r % 2) != (c % 2)]  # between two cells, not a lattice corner
    out = floor.copy()
    for i in rng.permutation(len(walls))[:n_open]:
        out[walls[int(i)]] = True
    return out


class MazeBraidTask(MazeTask):
    """A braided maze: the same drawing as `maze`, with loops. Several valid routes; the rule is the shortest (unique)."""

    name = "maze_braid"
    conditions_as = "maze"  # a model trained on `maze` draws these with its maze conditioning (same puzzle, same palette)
    description = "Draw the shortest path from the green start to the red goal through a maze with loops (several valid routes)."
    max_tries = 200

    def generate(self, seed: int, size: int | tuple[int, int] | None = None, *, n_frames: int = 8, cell_px: int = 8, **kw: Any) -> MazeInstance:
        """A perfect maze of `maze` (same seed, same carving), braided (rejecting each braiding until the shortest
        route is unique and a longer valid one exists)."""
        base = super().generate(seed, size, n_frames=n_frames, cell_px=cell_px, **kw)
        floor = floor_mask(base)
        n_open = max(1, base.rows * base.cols // 8)  # about 4 loops in a 6x6 maze
        rng = np.random.default_rng([seed, base.rows, base.cols, 1])
        for i in range(self.max_tries):
            f = braid(floor, n_open - i % n_open, rng)  # fewer openings on later tries: a small maze may admit only one
            if count_shortest(f, base.start, base.goal) == 1 and longer_route(f, base.start, base.goal):
                grid = tuple("".join("." if v else "#" for v in row) for row in f)
                return MazeInstance(base.rows, base.cols, base.seed, grid, base.start, base.goal, n_frames, cell_px)
        raise ValueError(f"maze_braid: no braiding of seed {seed} gave a unique shortest route in {self.max_tries} tries")

    def prompt(self, inst: MazeInstance) -> str:
        return (
            f"A {inst.rows}x{inst.cols} maze with loops, so several routes lead to the goal. Starting from the green square in the "
            "top-left corner, draw in blue the shortest path through the white corridors to the red square, without crossing black walls."
        )

    def score_blocks(self, inst: MazeInstance, final: np.ndarray, video: np.ndarray) -> Score:
        """Success iff the drawn route is the (unique) shortest; `valid_route` says whether it is any valid route."""
        s = super().score_blocks(inst, final, video)
        valid = s.success  # start and goal kept, no wall crossed, the blue blocks one simple floor route
        cls = classify_blocks(final, MAZE_COLORS)
        shortest = valid and bool(np.array_equal(cls == MAZE_COLORS.index(PATH), solution_mask(inst)))
        return Score(shortest, s.score, {**s.details, "valid_route": bool(valid), "shortest_route": bool(shortest)})


def longer_route_video(task: Task, inst: MazeInstance) -> np.ndarray:
    """A braided maze's ground truth with a valid but longer route drawn in the last frame instead of the shortest."""
    video = task.blocks(inst)
    video[-1] = video[0]
    for q in longer_route(floor_mask(inst), inst.start, inst.goal)[1:-1]:
        video[-1][q] = PALETTE_ARRAY[COLOR_INDEX[PATH]]
    return video
