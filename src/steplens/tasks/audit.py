"""Audit a task's generator and scorer: the ground truth must pass, corruptions and rule breaks must fail.

For each of `n` instances (seeds `seed .. seed+n-1`) the audit scores a set of cases, each with an
expectation:

- must succeed: the ground truth (with score 1.0), and the ground truth resized 2x and 1.37x
  (bilinear), blurred (3x3 box) and JPEG-compressed (quality 60), since scorers read block colours;
- must fail: the first frame repeated (nothing done), uniform noise, an all-black and an all-white
  video, and each named rule violation from `task.violations(inst)` (or, for tasks that do not
  define it, a builder here keyed by task name: maze's path through a wall, path with a dead-end
  branch and path with a gap);
- the process (`steplens.tasks.process`): the ground truth must pass it; "end-jump" (the first frame held,
  then the true final frame) must fail it, though it passes the final-state scorer (which reads the last
  frame only: recorded as the `end_jump` case, expected to succeed);
- checks of the generator: the same seed regenerates identical bytes, and the instance survives a
  JSON round trip of its metadata.

The report passes iff every case meets its expectation on every instance.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .base import COLOR_INDEX, PALETTE_ARRAY, Task, blocks_to_frames
from .process import end_jump, process_score

Frames = np.ndarray  # (T, H, W, 3) uint8


@dataclass(frozen=True)
class CaseResult:
    """One audit case over all instances: how often it succeeded and on which seeds it broke its expectation."""

    name: str
    expect_success: bool
    n: int
    successes: int
    mean_score: float
    bad_seeds: tuple[int, ...]

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    @property
    def passed(self) -> bool:
        return self.n > 0 and not self.bad_seeds

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expect_success": self.expect_success,
            "n": self.n,
            "success_rate": self.success_rate,
            "mean_score": self.mean_score,
            "passed": self.passed,
            "bad_seeds": list(self.bad_seeds),
        }


@dataclass(frozen=True)
class AuditReport:
    """Every case's result for one task; `passed` iff every case met its expectation on every instance."""

    task: str
    n: int
    seed: int
    size: int | None
    cases: tuple[CaseResult, ...]

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def case(self, name: str) -> CaseResult:
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(f"no audit case {name!r}; cases: {[c.name for c in self.cases]}")

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "n": self.n, "seed": self.seed, "size": self.size, "passed": self.passed, "cases": [c.to_dict() for c in self.cases]}


# -- corruptions of a rendered video ---------------------------------------------------------------
def resize(frames: Frames, scale: float) -> Frames:
    """Bilinear resize of every frame by `scale`."""
    h, w = frames.shape[1:3]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])


def box_blur(frames: Frames) -> Frames:
    """3x3 box blur of every frame (edges replicated)."""
    p = np.pad(frames.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = frames.shape[1:3]
    acc = sum(p[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return np.clip(np.rint(acc / 9.0), 0, 255).astype(np.uint8)


def jpeg(frames: Frames, quality: int = 60) -> Frames:
    """Every frame through a PIL JPEG encode and decode at `quality`."""
    out = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out)


# -- rule violations for tasks that do not define `violations` -----------------------------------
def _polyline(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Blocks along axis-aligned segments joining `points`, each block once."""
    out = [points[0]]
    for (r0, c0), (r1, c1) in zip(points, points[1:]):
        dr, dc = int(np.sign(r1 - r0)), int(np.sign(c1 - c0))
        r, c = r0, c0
        while (r, c) != (r1, c1):
            r, c = (r + dr, c) if r != r1 else (r, c + dc)
            out.append((r, c))
    return out


def maze_violations(task: Task, inst: Any) -> dict[str, np.ndarray]:
    """Maze block videos whose final frame is a path through a wall, with a dead-end branch, or with a gap."""
    from .maze import PATH, bfs_path, floor_mask, is_simple_path

    floor = floor_mask(inst)
    truth = task.blocks(inst)
    path = bfs_path(floor, inst.start, inst.goal)

    def with_path(blue: list[tuple[int, int]]) -> np.ndarray:
        video = truth.copy()
        video[-1] = truth[0]  # the puzzle, then the blue blocks on it
        for p in blue:
            video[-1][p] = PALETTE_ARRAY[COLOR_INDEX[PATH]]
        return video

    out = {}
    (sr, sc), (gr, gc) = inst.start, inst.goal
    # a simple route through the lattice corner next to the start, which is always a wall block
    for corners in ([(sr, sc + 1), (gr, sc + 1)], [(sr + 1, sc), (sr + 1, gc)]):
        route = _polyline([inst.start, *corners, inst.goal])
        mask = np.zeros_like(floor)
        mask[tuple(np.array(route).T)] = True
        if is_simple_path(mask, inst.start, inst.goal) and bool((mask & ~floor).any()):
            out["through_wall"] = with_path(route[1:-1])
            break
    on_path = set(path)
    h, w = floor.shape
    side = sorted(
        (r + dr, c + dc)
        for r, c in path
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
        if 0 <= r + dr < h and 0 <= c + dc < w and floor[r + dr, c + dc] and (r + dr, c + dc) not in on_path
    )
    if side:  # absent only when the maze is one corridor ending at the goal
        out["branch"] = with_path(path[1:-1] + [side[0]])
    inner = path[1:-1]
    out["gap"] = with_path(inner[: len(inner) // 2] + inner[len(inner) // 2 + 1 :])
    return out


def maze_braid_violations(task: Task, inst: Any) -> dict[str, np.ndarray]:
    """The maze's violations plus `longer_route`: a valid route from start to goal that is not the (unique) shortest."""
    from .maze import longer_route_video

    return maze_violations(task, inst) | {"longer_route": longer_route_video(task, inst)}


VIOLATIONS: dict[str, Callable[[Task, Any], dict[str, np.ndarray]]] = {"maze": maze_violations, "maze_braid": maze_braid_violations}


def task_violations(task: Task, inst: Any) -> dict[str, np.ndarray]:
    """Named rule-breaking block videos: the task's own `violations`, else a builder from VIOLATIONS."""
    own = getattr(task, "violations", None)
    if callable(own):
        return own(inst)
    build = VIOLATIONS.get(task.name)
    return build(task, inst) if build is not None else {}


# -- the audit ------------------------------------------------------------------------------------
_MUST_PASS: dict[str, Callable[[Frames], Frames]] = {
    "ground_truth": lambda v: v,
    "resized_2x": lambda v: resize(v, 2.0),
    "resized_1.37x": lambda v: resize(v, 1.37),
    "blurred_3x3": box_blur,
    "jpeg_q60": jpeg,
}


def _must_fail(truth: Frames, rng: np.random.Generator) -> dict[str, Frames]:
    return {
        "static_first_frame": np.repeat(truth[:1], len(truth), axis=0),
        "noise": rng.integers(0, 256, size=truth.shape, dtype=np.uint8),
        "all_black": np.zeros_like(truth),
        "all_white": np.full_like(truth, 255),
    }


def audit_task(task: Task | str, n: int = 50, seed: int = 0, size: int | None = None) -> AuditReport:
    """Score every audit case on `n` instances (seeds seed..seed+n-1) of `task` (a Task or its name)."""
    if isinstance(task, str):
        from . import get_task

        task = get_task(task)
    if n < 1:
        raise ValueError(f"audit needs n >= 1, got {n}")
    rows: dict[str, list[tuple[int, bool, float, bool]]] = {}  # case -> (seed, success, score, as expected)
    expect: dict[str, bool] = {}

    def record(name: str, want: bool, s: int, success: bool, score: float, ok: bool | None = None) -> None:
        expect.setdefault(name, want)
        rows.setdefault(name, []).append((s, success, score, (success == want) if ok is None else ok))

    for i in range(n):
        s = seed + i
        inst = task.generate(s, size)
        truth = task.render(inst)
        again = task.render(task.generate(s, size))
        same = again.shape == truth.shape and again.tobytes() == truth.tobytes()
        record("regenerate_identical", True, s, same, float(same))
        back = task.from_meta(json.loads(json.dumps(task.to_meta(inst))))
        record("meta_roundtrip", True, s, back == inst, float(back == inst))
        for name, corrupt in _MUST_PASS.items():
            sc = task.score(inst, corrupt(truth))
            # the untouched ground truth must also score exactly 1.0
            record(name, True, s, sc.success, sc.score, sc.success and (name != "ground_truth" or sc.score == 1.0))
        # the final-state scorer is blind to the process (end-jump passes it); the process score must not be
        jump = end_jump(truth)
        sc = task.score(inst, jump)
        record("end_jump", True, s, sc.success, sc.score)
        for name, video, want in (("ground_truth", truth, True), ("end_jump", jump, False)):
            sc = process_score(task, inst, video)
            record(f"process:{name}", want, s, sc.success, sc.score)
        for name, video in _must_fail(truth, np.random.default_rng([s, 7])).items():
            sc = task.score(inst, video)
            record(name, False, s, sc.success, sc.score)
        for name, bad in task_violations(task, inst).items():
            sc = task.score(inst, blocks_to_frames(bad, inst.cell_px))
            record(f"violation:{name}", False, s, sc.success, sc.score)
    # fixed cases in the order run, then violations by name (their first instance may lack some)
    order = sorted(rows, key=lambda k: (k.startswith("violation:"), k if k.startswith("violation:") else ""))
    cases = tuple(
        CaseResult(
            name,
            expect[name],
            len(r),
            sum(x[1] for x in r),
            float(np.mean([x[2] for x in r])),
            tuple(x[0] for x in r if not x[3]),
        )
        for name, r in ((k, rows[k]) for k in order)
    )
    return AuditReport(task.name, n, seed, size, cases)


def format_report(report: AuditReport) -> str:
    """A plain-text table of the audit: one row per case, then the seeds that broke an expectation."""
    size = "default" if report.size is None else str(report.size)
    lines = [
        f"audit {report.task}: n={report.n} seed={report.seed} size={size} -> {'PASSED' if report.passed else 'FAILED'}",
        f"{'case':<30} {'expect':<7} {'n':>4} {'success':>8} {'score':>7}  ok",
    ]
    for c in report.cases:
        lines.append(
            f"{c.name:<30} {'pass' if c.expect_success else 'fail':<7} {c.n:>4} {c.success_rate:>8.3f} {c.mean_score:>7.3f}  {'yes' if c.passed else 'NO'}"
        )
    for c in report.cases:
        if c.bad_seeds:
            shown = ", ".join(map(str, c.bad_seeds[:10])) + (" ..." if len(c.bad_seeds) > 10 else "")
            lines.append(f"  {c.name}: unexpected on seeds {shown}")
    return "\n".join(lines)


# -- leakage: how many distinct instances a level has, and how many evaluation instances training drew --------------
MEMORISABLE_BELOW = 10_000  # a level with fewer distinct instances than this is drawn whole by a few thousand training steps


def chao1(keys: list[int]) -> tuple[float, int, int, int]:
    """Bias-corrected Chao1 estimate of the number of distinct values behind `keys` (draws with replacement).

    S = S_obs + f1 (f1 - 1) / (2 (f2 + 1)), with S_obs the distinct keys seen, f1 those seen exactly once and f2
    those seen exactly twice. A lower bound when some instances are likelier than others; with every draw distinct
    (f1 = draws) it gives about draws^2 / 2, i.e. "far more than were drawn". Returns (S, S_obs, f1, f2).
    """
    counts = np.unique(np.asarray(keys, dtype=np.uint64), return_counts=True)[1]
    s_obs, f1, f2 = len(counts), int((counts == 1).sum()), int((counts == 2).sum())
    return s_obs + f1 * (f1 - 1) / (2 * (f2 + 1)), s_obs, f1, f2


def leakage(task: Task | str, size: int | None = None, *, draws: int = 3000, seed: int = 10_000, n: int = 100,
            n_frames: int | None = None, seen: Any = None) -> dict[str, Any]:
    """Distinct instances at a level (Chao1 over `draws` training-range seeds), and evaluation seeds' overlap with training.

    `seed`..`seed+n-1` are the evaluation seeds (`steplens evaluate`'s default start); `eval_in_draws` is the fraction of
    them whose instance one of the draws also is, `eval_in_seen` the fraction in `seen` (a model's `steplens.seen.SeenSet`;
    None without one). Generation only: no model runs. `n_frames`: the model's (a key is of the block video at that length).
    """
    from ..train import TRAIN_SEED_BASE

    if isinstance(task, str):
        from . import get_task

        task = get_task(task)
    kw = {} if n_frames is None else {"n_frames": n_frames}
    key = lambda s: task.key(task.generate(s, size, cell_px=1, **kw))  # noqa: E731
    drawn = [key(TRAIN_SEED_BASE + i) for i in range(draws)]
    est, s_obs, f1, f2 = chao1(drawn)
    evals = [key(seed + i) for i in range(n)]
    pool = set(drawn)
    return {"task": task.name, "size": task.default_size if size is None else size, "n_frames": n_frames,
            "estimator": "chao1 (bias-corrected): S_obs + f1(f1-1)/(2(f2+1))", "draws": draws, "distinct_drawn": s_obs, "f1": f1, "f2": f2,
            "estimated_distinct": round(est, 1), "memorisable": bool(est < MEMORISABLE_BELOW),
            "eval_seeds": [seed, seed + n - 1], "eval_distinct": len(set(evals)),
            "eval_in_draws": sum(k in pool for k in evals) / n,
            "eval_in_seen": None if seen is None else sum(k in seen for k in evals) / n,
            "seen_sha256": None if seen is None else seen.sha256}
