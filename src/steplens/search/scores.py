"""Early scores: how promising a seed's decoded plan x0_hat looks after a few steps (pure numpy).

Every score maps the K seeds' plans of one instance at one step to K numbers, higher = more promising.
Plans are block grids `(K, T, Hb, Wb, 3)` uint8 (the decoded x0_hat mapped onto the task's block grid;
frame 0 is the given image). Two kinds:

- model-intrinsic (no task knowledge): `decided` (how close the blocks the model is drawing are to a
  palette colour), `ambiguity` (how much undecided colour the plan holds in total: several faint
  routes cost more than one), `stability` (how little x0_hat moved since the previous step),
  `agreement` (how close the plan is to the other seeds' plans).
- task rules (`uses_task_rules`): `route`, the maze rules applied to a partial answer. Early plans
  light several routes at once, so no single threshold is right: thresholding the plan's blueness at
  level t gives a valid answer (one floor route from start to goal, nothing else lit) exactly for
  t in (spill, bottleneck], where bottleneck is the weakest block of the strongest (maximin) floor
  route and spill the strongest lit block off it. The score is the width of that interval.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tasks import PALETTE

_PAL = np.array(list(PALETTE.values()), dtype=np.float32)  # (P, 3)
_BLUE = np.array(PALETTE["blue"], np.float32)
_OTHER = np.array([PALETTE[c] for c in ("white", "black", "green", "red")], np.float32)  # the maze's other colours
CHANGED = 40.0  # RGB distance from the given frame above which a block counts as drawn


def palette_margin(blocks: np.ndarray) -> np.ndarray:
    """(..., 3) colours -> (...) in [0, 1]: (d2 - d1) / (d2 + d1) for the nearest two palette colours (1: on one)."""
    d = np.linalg.norm(blocks[..., None, :].astype(np.float32) - _PAL, axis=-1)  # (..., P)
    d.sort(axis=-1)
    return (d[..., 1] - d[..., 0]) / np.maximum(d[..., 1] + d[..., 0], 1e-6)


def drawn_mask(plans: np.ndarray, threshold: float = CHANGED) -> np.ndarray:
    """(K, T, H, W, 3) -> (K, T-1, H, W) bool: blocks of frames 1.. that differ from the given frame 0."""
    p = plans.astype(np.float32)
    return np.linalg.norm(p[:, 1:] - p[:, :1], axis=-1) > threshold


def decided(plans: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
    """Mean palette margin over the drawn blocks (a plan that draws nothing scores 0)."""
    margin = palette_margin(plans[:, 1:])  # (K, T-1, H, W)
    mask = drawn_mask(plans)
    n = mask.sum(axis=(1, 2, 3))
    return np.where(n > 0, (margin * mask).sum(axis=(1, 2, 3)) / np.maximum(n, 1), 0.0)


def ambiguity(plans: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
    """Minus the total undecidedness (1 - margin) of the drawn blocks of the last frame: faint extra routes cost."""
    last = plans[:, -1:]
    margin = palette_margin(last[:, 0])  # (K, H, W)
    mask = drawn_mask(np.concatenate([plans[:, :1], last], axis=1))[:, 0]
    return -((1.0 - margin) * mask).sum(axis=(1, 2))


def stability(plans: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
    """Minus the mean RGB change of frames 1.. since the previous step's plan (0 when there is none)."""
    if prev is None:
        return np.zeros(len(plans))
    d = np.abs(plans[:, 1:].astype(np.float32) - prev[:, 1:].astype(np.float32))
    return -d.reshape(len(plans), -1).mean(axis=1)


def agreement(plans: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
    """Minus the mean L2 distance of each plan (frames 1..) to the other K-1 (0 for K = 1)."""
    flat = plans[:, 1:].reshape(len(plans), -1).astype(np.float64) / 255.0
    if len(flat) < 2:
        return np.zeros(len(flat))
    sq = (flat**2).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * flat @ flat.T, 0.0))
    return -d.sum(1) / (len(flat) - 1)


def blueness(colors: np.ndarray) -> np.ndarray:
    """(..., 3) -> (...) in [0, 1]: d_other / (d_other + d_blue), d_other the distance to the nearest other maze colour
    (white floor, black wall, green start, red goal): 1 on path blue, 0 on any other maze colour, 0.5 halfway."""
    c = colors.astype(np.float32)
    d_other = np.linalg.norm(c[..., None, :] - _OTHER, axis=-1).min(-1)
    d_blue = np.linalg.norm(c - _BLUE, axis=-1)
    return d_other / np.maximum(d_other + d_blue, 1e-6)


def widest_route(weight: np.ndarray, allowed: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """The 4-neighbour route from start to goal over `allowed` blocks maximising its weakest inner weight ([] if none)."""
    h, w = weight.shape
    best = np.full((h, w), -np.inf)
    best[start] = np.inf
    prev: dict[tuple[int, int], tuple[int, int]] = {}
    heap = [(-np.inf, start)]
    while heap:
        neg, p = heapq.heappop(heap)
        if p == goal:
            break
        if -neg < best[p]:
            continue  # a stale entry
        r, c = p
        for q in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= q[0] < h and 0 <= q[1] < w and allowed[q]:
                v = min(best[p], np.inf if q == goal else float(weight[q]))
                if v > best[q]:
                    best[q], prev[q] = v, p
                    heapq.heappush(heap, (-v, q))
    if goal not in prev:
        return []
    route = [goal]
    while route[-1] != start:
        route.append(prev[route[-1]])
    return route[::-1]


def maze_route_score(inst: Any, frame: np.ndarray) -> float:
    """Task rules on one (Hb, Wb, 3) frame of a maze plan: bottleneck of the strongest floor route minus the spill off it."""
    from ..tasks.maze import floor_mask

    b = blueness(frame)
    floor = floor_mask(inst)
    route = widest_route(b, floor, inst.start, inst.goal)
    if not route:
        return -1.0
    inner = route[1:-1]
    bottleneck = min((float(b[p]) for p in inner), default=1.0)
    off = np.ones_like(floor)
    for p in route:
        off[p] = False
    spill = float(b[off].max()) if off.any() else 0.0
    return bottleneck - spill


def route(plans: np.ndarray, prev: np.ndarray | None = None, *, inst: Any = None) -> np.ndarray:
    """The maze verifier on each plan's last frame (see module doc)."""
    if inst is None:
        raise ValueError("the route score needs the task instance")
    return np.array([maze_route_score(inst, p[-1]) for p in plans])


@dataclass(frozen=True)
class EarlyScore:
    """A named early score: fn(plans (K, T, H, W, 3), prev plans or None[, inst=]) -> (K,), higher is better."""

    name: str
    fn: Callable[..., np.ndarray]
    uses_task_rules: bool = False
    tasks: tuple[str, ...] = ()  # the tasks whose rules it knows (empty: any task)

    def __call__(self, plans: np.ndarray, prev: np.ndarray | None = None, *, inst: Any = None) -> np.ndarray:
        out = self.fn(plans, prev, inst=inst) if self.uses_task_rules else self.fn(plans, prev)
        return np.asarray(out, dtype=np.float64)

    def supports(self, task: str) -> bool:
        return not self.tasks or task in self.tasks


SCORES: dict[str, EarlyScore] = {
    "decided": EarlyScore("decided", decided),
    "ambiguity": EarlyScore("ambiguity", ambiguity),
    "stability": EarlyScore("stability", stability),
    "agreement": EarlyScore("agreement", agreement),
    "route": EarlyScore("route", route, uses_task_rules=True, tasks=("maze", "maze_braid")),
}


def get_score(name: str) -> EarlyScore:
    try:
        return SCORES[name]
    except KeyError:
        raise ValueError(f"unknown early score {name!r}; choose from {sorted(SCORES)}") from None


VERIFIER_TASKS = ("maze", "maze_braid")  # the tasks with a rule verifier of complete answers (final_verifier)


def final_verifier(task: str, inst: Any, finals: np.ndarray) -> np.ndarray:
    """Task rules on complete answers (K, T, H, W, 3): the route score of each last frame (about 1 for a clean valid answer)."""
    if task not in VERIFIER_TASKS:
        raise ValueError(f"no rule verifier for task {task!r} (known: {', '.join(VERIFIER_TASKS)})")
    return np.array([maze_route_score(inst, f[-1]) for f in finals])


__all__ = ["CHANGED", "SCORES", "VERIFIER_TASKS", "EarlyScore", "agreement", "ambiguity", "blueness", "decided", "drawn_mask", "final_verifier",
           "get_score", "maze_route_score", "palette_margin", "route", "stability", "widest_route"]
