"""Chain-of-Steps metrics for mazes: pure functions over decoded clean estimates per step.

Inputs are block colours of the last video frame of x0_hat at each step, (S, Hb, Wb, 3) floats in
[0, 255] (what the decoder gives at one pixel per block). Definitions:
- path-colour (blueness) of a block: clip((b - max(r, g)) / 255, 0, 1): 1 for pure path blue,
  0 for white floor, black wall, green start and red goal.
- solution mass: mean blueness over the true path blocks.
- off-solution mass: mean blueness over floor blocks that are not on the path (nor start/goal).
- lit branches: connected groups (4-neighbour) of off-solution floor blocks with blueness >= 0.5:
  each is a candidate route the model is drawing that the true answer does not use.
- decoded answer: the set of blocks classified as path colour by the task's own classifier.
- commit step: the first step from which the decoded answer never changes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..tasks.base import classify_blocks, frame_to_blocks
from ..tasks.maze import MAZE_COLORS, PATH, MazeInstance, floor_mask, path_strength, solution_mask

LIT = 0.5


def blueness(blocks: np.ndarray) -> np.ndarray:
    """(..., 3) colours in [0, 255] -> (...) path-colour strength in [0, 1] (the maze task's own measure)."""
    return path_strength(blocks)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected groups of a bool mask (Hb, Wb), each as a mask, in scan order."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for r, c in zip(*np.nonzero(mask)):
        if seen[r, c]:
            continue
        group = np.zeros_like(mask, dtype=bool)
        stack = [(r, c)]
        seen[r, c] = group[r, c] = True
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = group[ny, nx] = True
                    stack.append((ny, nx))
        out.append(group)
    return out


def _components(mask: np.ndarray) -> int:
    return len(components(mask))


@dataclass(frozen=True)
class StepMetrics:
    """Per-step Chain-of-Steps numbers of one sample (arrays of length S)."""

    solution_mass: np.ndarray
    off_solution_mass: np.ndarray
    lit_branches: np.ndarray
    answer_correct: np.ndarray  # decoded answer == true path at this step
    commit_step: int
    final_correct: bool


def on_grid(frames: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """Frames (..., H, W, 3) of any resolution (a real VAE's pixels) mapped onto the task's block grid (..., Hb, Wb, 3)."""
    if frames.shape[-3:-1] == tuple(grid_hw):
        return frames
    flat = frames.reshape(-1, *frames.shape[-3:])
    return np.stack([frame_to_blocks(f, grid_hw) for f in flat]).reshape(*frames.shape[:-3], *grid_hw, 3)


def maze_step_metrics(inst: MazeInstance, steps_blocks: np.ndarray) -> StepMetrics:
    """Metrics of one sample from its decoded last frames per step, (S, Hb, Wb, 3) (or pixels: mapped to the grid)."""
    floor = floor_mask(inst)
    truth = solution_mask(inst)
    steps_blocks = on_grid(steps_blocks, truth.shape)
    off = floor & ~truth
    off[inst.start] = off[inst.goal] = False
    blue = blueness(steps_blocks)  # (S, Hb, Wb)
    sol = blue[:, truth].mean(axis=1) if truth.any() else np.zeros(len(blue))
    offm = blue[:, off].mean(axis=1) if off.any() else np.zeros(len(blue))
    lit = np.array([_components((b >= LIT) & off) for b in blue])
    answers = [classify_blocks(b, MAZE_COLORS) == MAZE_COLORS.index(PATH) for b in steps_blocks]
    correct = np.array([np.array_equal(a, truth) for a in answers])
    return StepMetrics(sol, offm, lit, correct, commit_step(answers), bool(correct[-1]))


def commit_step(answers: Sequence[np.ndarray]) -> int:
    """First index from which every later answer equals the final one."""
    final = answers[-1]
    s = len(answers) - 1
    while s > 0 and np.array_equal(answers[s - 1], final):
        s -= 1
    return s


def self_correction(correct: np.ndarray) -> str:
    """'corrected' (wrong at some step, right at the end), 'lost' (right at some step, wrong at the end),
    'always' (right from the first step), 'never' (never right)."""
    if correct[-1]:
        return "always" if correct.all() else "corrected"
    return "lost" if correct.any() else "never"


def settle_step(values: np.ndarray, tol: float) -> int:
    """First step after which a per-step signal stays within `tol` of its final value."""
    dev = np.abs(values - values[-1]) > tol
    idx = np.nonzero(dev)[0]
    return int(idx[-1] + 1) if idx.size else 0
