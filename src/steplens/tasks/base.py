"""What every task is: an instance dataclass, a seeded generator, a block-grid renderer and a pure scorer.

All tasks draw on a grid of square colour blocks (`cell_px` pixels each). The ground truth is a
block video `(T, Hb, Wb, 3)` uint8; `render` upsamples it. Scorers map any frame, at any
resolution, back onto the block grid (`frame_to_blocks`) and classify each block by its nearest
palette colour, so they are robust to resizing, blur and compression.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from ..config import InputError, jsonable

# The shared palette (RGB). Tasks use a subset; indices are stable across tasks.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "green": (0, 200, 0),
    "red": (220, 0, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 210, 0),
    "gray": (128, 128, 128),
    "magenta": (200, 0, 200),
    "cyan": (0, 200, 220),
}
COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)
COLOR_INDEX: dict[str, int] = {n: i for i, n in enumerate(COLOR_NAMES)}
PALETTE_ARRAY = np.array([PALETTE[n] for n in COLOR_NAMES], dtype=np.uint8)  # (P, 3)


class TaskInputError(InputError, ValueError):
    """Frames or metadata that a scorer cannot interpret (wrong shape, dtype, size)."""


@dataclass(frozen=True)
class Score:
    """The verdict of a rule-based scorer: success, a partial score in [0, 1], and what was seen."""

    success: bool
    score: float
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")

    def to_dict(self) -> dict[str, Any]:
        return {"success": bool(self.success), "score": float(self.score), "details": self.details}


def blocks_to_frames(blocks: np.ndarray, cell_px: int) -> np.ndarray:
    """(T, Hb, Wb, 3) uint8 block video -> (T, Hb*cell_px, Wb*cell_px, 3) frames by nearest upsampling."""
    if cell_px < 1:
        raise ValueError(f"cell_px must be >= 1, got {cell_px}")
    return np.repeat(np.repeat(blocks, cell_px, axis=-3), cell_px, axis=-2)


def frame_to_blocks(frame: np.ndarray, grid_hw: tuple[int, int], *, core: float = 0.5) -> np.ndarray:
    """Map one frame of any resolution onto a (Hb, Wb) block grid: the median colour of each block's core.

    Using only the central `core` fraction of each block (and the median) ignores the blurred or
    compressed edges between blocks, so a resized, blurred or re-encoded video maps back exactly.
    """
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise TaskInputError(f"expected a (H, W, 3) frame, got shape {tuple(frame.shape)}")
    hb, wb = grid_hw
    h, w = frame.shape[:2]
    if h < hb or w < wb:
        raise TaskInputError(f"frame {h}x{w} is smaller than the {hb}x{wb} block grid")
    pad = (1.0 - core) / 2.0
    if h % hb == 0 and w % wb == 0:  # fast path: whole pixels per block
        ph, pw = h // hb, w // wb
        r0, c0 = int(np.floor(pad * ph)), int(np.floor(pad * pw))
        r1, c1 = max(r0 + 1, int(np.ceil(ph - pad * ph))), max(c0 + 1, int(np.ceil(pw - pad * pw)))
        cells = frame.reshape(hb, ph, wb, pw, 3)[:, r0:r1, :, c0:c1]  # (Hb, ph', Wb, pw', 3)
        cells = cells.transpose(0, 2, 1, 3, 4).reshape(hb, wb, -1, 3)
        return np.median(cells.astype(np.float32), axis=2)
    f = frame.astype(np.float32)
    out = np.empty((hb, wb, 3), dtype=np.float32)
    ys = np.linspace(0, h, hb + 1)
    xs = np.linspace(0, w, wb + 1)
    for i in range(hb):
        y0, y1 = ys[i], ys[i + 1]
        r0 = int(np.floor(y0 + pad * (y1 - y0)))
        r1 = max(r0 + 1, int(np.ceil(y1 - pad * (y1 - y0))))
        for j in range(wb):
            x0, x1 = xs[j], xs[j + 1]
            c0 = int(np.floor(x0 + pad * (x1 - x0)))
            c1 = max(c0 + 1, int(np.ceil(x1 - pad * (x1 - x0))))
            out[i, j] = np.median(f[r0:r1, c0:c1].reshape(-1, 3), axis=0)
    return out


def classify_blocks(colors: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(Hb, Wb, 3) block colours -> (Hb, Wb) indices into `names`, by nearest palette colour.

    Also returns -1 for blocks far from every allowed colour (distance > 120 in RGB), so a
    uniform-noise or wrongly coloured frame is not forced onto the palette.
    """
    pal = np.array([PALETTE[n] for n in names], dtype=np.float32)  # (K, 3)
    d = np.linalg.norm(colors[..., None, :].astype(np.float32) - pal, axis=-1)  # (Hb, Wb, K)
    idx = d.argmin(axis=-1)
    idx[d.min(axis=-1) > 120.0] = -1
    return idx


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate a video as (T, H, W, 3) uint8 (a single (H, W, 3) frame is accepted as T=1)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise TaskInputError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise TaskInputError("video has no frames")
    if frames.dtype != np.uint8:
        raise TaskInputError(f"expected uint8 frames, got {frames.dtype}")
    return frames


I = TypeVar("I")


IN_CONDITIONING = "in the conditioning"
COMPUTABLE = "computable from the conditioning"
ABSENT = "absent from the conditioning"
RECALL_SOURCES = (IN_CONDITIONING, COMPUTABLE, ABSENT)


@dataclass(frozen=True)
class Recall:
    """What a task asks the model to remember: an object that must be at `at` in the last frame after being away.

    `away`: ground-truth frames (after frame 0) in which the object is not at `at`, the gap memory must
    bridge. A model that shows the object at `at` in every frame has copied, not remembered.
    `source`: where the needed content is, declared by the task: IN_CONDITIONING (drawn in a frame the
    model is given, e.g. frame 0, which an image-to-video model sees at every frame: a copy), COMPUTABLE
    (a function of the conditioning alone, e.g. a position from a start and a speed shown in frame 0), or
    ABSENT (in no conditioning frame and not computable from it: only the model's own earlier frames
    hold it). Only ABSENT is working memory; `reason` says why, in words, whichever it is.
    `chance`: how often a video that forgets the content but does the rest right still shows it (1/K where the
    answer is one of K equivalent choices): the memory rate is read against it.
    """

    what: str
    color: str
    at: tuple[int, int]
    away: tuple[int, ...]
    source: str
    reason: str
    chance: float = 0.0

    def __post_init__(self) -> None:
        if self.source not in RECALL_SOURCES:
            raise ValueError(f"Recall.source must be one of {RECALL_SOURCES}, got {self.source!r}")
        if not self.reason.strip():
            raise ValueError("Recall.reason must say why the content is where `source` says")
        if not 0.0 <= self.chance < 1.0:
            raise ValueError(f"Recall.chance must be in [0, 1), got {self.chance!r}")

    @property
    def measurable(self) -> bool:
        """Whether recalling it needs memory: the content is in no conditioning frame and not computable from it."""
        return self.source == ABSENT

    def not_measurable(self) -> str:
        """The verdict for a recall that needs no memory ("" when it does)."""
        return "" if self.measurable else f"not measurable on this task: the needed content is {self.source}: {self.reason}"


class Task(abc.ABC, Generic[I]):
    """A reasoning task: data plus pure functions. No model code lives here."""

    name: ClassVar[str]
    instance_type: ClassVar[type]
    default_size: ClassVar[int]
    sizes: ClassVar[tuple[int, ...]]
    description: ClassVar[str]
    colors: ClassVar[tuple[str, ...]]  # the palette the scorer classifies against
    scene_colors: ClassVar[tuple[str, ...]] = ()  # colours of what the puzzle is (walls, objects), as opposed to background
    background: ClassVar[str | None] = None  # the colour of empty ground (nothing drawn), where the task has one
    generator_version: ClassVar[int] = 1  # bumped when a task's generator draws different instances; generate(version=1) redraws the old ones
    conditions_as: ClassVar[str | None] = None  # a level of another task: the task name a model trained on that task conditions on

    def check_version(self, version: int | None) -> int:
        """`version`, or the task's `generator_version` when None; anything outside 1..generator_version is a ValueError."""
        v = self.generator_version if version is None else version
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= self.generator_version:
            raise ValueError(f"{self.name} generator version must be one of {list(range(1, self.generator_version + 1))}, got {version!r}")
        return v

    @abc.abstractmethod
    def generate(self, seed: int, size: int | None = None, **kw: Any) -> I:
        """A new instance from an explicit seed (same seed and arguments, same instance).

        Tasks with `generator_version` > 1 take `version=` (default: the class's generator_version) to redraw an older generator's instances.
        """

    @abc.abstractmethod
    def blocks(self, inst: I) -> np.ndarray:
        """Ground-truth block video (T, Hb, Wb, 3) uint8."""

    @abc.abstractmethod
    def prompt(self, inst: I) -> str:
        """The instruction a video model is given."""

    @abc.abstractmethod
    def score_blocks(self, inst: I, final: np.ndarray, video: np.ndarray) -> Score:
        """Score block colours of the final frame (Hb, Wb, 3) float; `video` is all frames' blocks."""

    # -- shared behaviour ---------------------------------------------------------------------
    def check_size(self, size: int | None, size_what: str = "") -> int:
        """`size`, or the default size when None; a size outside `sizes` is a ValueError naming the range."""
        n = self.default_size if size is None else size
        if isinstance(n, bool) or not isinstance(n, int) or n not in self.sizes:
            lo, hi = min(self.sizes), max(self.sizes)
            allowed = f"{lo}..{hi}" if list(self.sizes) == list(range(lo, hi + 1)) else f"one of {self.sizes}"
            what = f" ({size_what})" if size_what else ""
            raise ValueError(f"{self.name} size{what} must be in {allowed}, got {size!r}")
        return n

    def key(self, inst: I) -> int:
        """The instance's content identity: a 64-bit hash of the task name and its block video (what a model sees and must produce).

        Equal puzzles have equal keys whatever seed drew them; the seed, `cell_px` and other drawing settings do not enter.
        """
        return content_key(self.name, self.blocks(inst))

    def check_generate_args(self, size: int | None, n_frames: int, extra: dict[str, Any], *, size_what: str,
                            min_frames: int = 2, frames_why: str = "") -> int:
        """Validate `generate`'s common arguments; returns the size (the default when None)."""
        if extra:
            raise TypeError(f"{self.name}: unknown arguments {sorted(extra)}")
        n = self.check_size(size, size_what)
        if n_frames < min_frames:
            why = f" ({frames_why})" if frames_why else ""
            raise ValueError(f"{self.name} needs n_frames >= {min_frames}{why}, got {n_frames}")
        return n

    def roles(self, inst: I) -> dict[str, np.ndarray]:
        """Each block's role in the answer (last) frame, from the ground truth: (Hb, Wb) bool masks.

        scene: unchanged in every frame and drawn in a scene colour (walls, objects: what the puzzle is);
        action: different in the last frame than in frame 0 (a drawn path, a moved object);
        background: unchanged in every frame and not scene (e.g. a maze's dead-end floor, where candidates fade).
        """
        video = self.blocks(inst)  # (T, Hb, Wb, 3) exact palette colours
        static = (video == video[0]).all(axis=(0, 3))
        drawn = np.zeros(static.shape, dtype=bool)
        for c in self.scene_colors:
            drawn |= (video[0] == PALETTE[c]).all(-1)
        return {"scene": static & drawn, "action": (video[-1] != video[0]).any(-1), "background": static & ~drawn}

    def candidates(self, inst: I, final: np.ndarray) -> np.ndarray:
        """Blocks a final frame (Hb, Wb, 3) draws as answer: classified, and unlike the puzzle (frame 0) there."""
        first = classify_blocks(self.blocks(inst)[0].astype(np.float32), self.colors)
        cls = classify_blocks(np.asarray(final, dtype=np.float32), self.colors)
        return (cls >= 0) & (cls != first)

    def recall(self, inst: I) -> Recall | None:
        """The object this task asks the model to remember, with where its content is (`Recall.source`).

        None: the task asks for nothing that is out of sight when it is needed.
        """
        return None

    def recalled(self, inst: I, video: np.ndarray) -> tuple[int, int] | None:
        """The block a generated block video (T, Hb, Wb, 3) must show the recall at: `recall(inst).at` unless the
        content is the model's own choice (a task where any of several answers is right overrides this); None: the
        video commits to none."""
        rec = self.recall(inst)
        return None if rec is None else rec.at

    def forgetful(self, inst: I) -> np.ndarray | None:
        """A block video that does everything right but forgets the recall (the last frame shows another of the
        equally valid contents than the walk chose), for the memory null `null:forget`; None: the task has none."""
        return None

    def render(self, inst: I) -> np.ndarray:
        """Ground-truth video (T, H, W, 3) uint8 at the instance's `cell_px`."""
        return blocks_to_frames(self.blocks(inst), inst.cell_px)  # type: ignore[attr-defined]

    def first_frame(self, inst: I) -> np.ndarray:
        return self.render(inst)[0]

    def grid_hw(self, inst: I) -> tuple[int, int]:
        b = self.blocks(inst)
        return int(b.shape[1]), int(b.shape[2])

    def video_blocks(self, inst: I, frames: np.ndarray) -> np.ndarray:
        """Any video of this instance mapped back onto its block grid: (T, Hb, Wb, 3) float."""
        frames = check_frames(frames)
        hw = self.grid_hw(inst)
        if frames.shape[1:3] == hw:
            return frames.astype(np.float32)
        return np.stack([frame_to_blocks(f, hw) for f in frames])

    def score(self, inst: I, frames: np.ndarray) -> Score:
        """Score a generated video (T, H, W, 3) uint8 of any resolution against the instance."""
        frames = check_frames(frames)
        hw = self.grid_hw(inst)
        final = frame_to_blocks(frames[-1], hw) if frames.shape[1:3] != hw else frames[-1].astype(np.float32)
        return self.score_blocks(inst, final, frames)

    def to_meta(self, inst: I) -> dict[str, Any]:
        d = dataclasses.asdict(inst)  # type: ignore[call-overload]
        return {"task": self.name, **jsonable(d)}

    def from_meta(self, meta: dict[str, Any]) -> I:
        d = {k: v for k, v in meta.items() if k != "task"}
        names = {f.name for f in dataclasses.fields(self.instance_type)}
        missing = names - set(d)
        if missing:
            raise TaskInputError(f"meta for task {self.name!r} lacks {sorted(missing)}")
        return self.instance_type(**{k: _untuple(d[k]) for k in names})


def content_key(task: str, blocks: np.ndarray) -> int:
    """64-bit blake2b of a task name, a block video's shape and its bytes (`Task.key`); < 2**64, stored as uint64."""
    blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
    h = hashlib.blake2b(digest_size=8)
    h.update(task.encode() + b"\0" + np.asarray(blocks.shape, dtype="<i8").tobytes())
    h.update(blocks.tobytes())
    return int.from_bytes(h.digest(), "little")


def _untuple(x: Any) -> Any:
    """JSON turns tuples into lists; instances store tuples (hashable, frozen)."""
    if isinstance(x, list):
        return tuple(_untuple(v) for v in x)
    return x


def with_finals(truth: np.ndarray, finals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """For each named (Hb, Wb) palette-index frame, the ground-truth block video with that frame as its last."""
    out = {}
    for name, idx in finals.items():
        video = truth.copy()
        video[-1] = PALETTE_ARRAY[idx]
        out[name] = video
    return out
