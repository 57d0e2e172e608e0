"""Trivial videos that need no model, run beside every model on the official layout: a benchmark number is evidence
only above them (VBVR-EvalKit issue 240: first-frame-only videos outscore the leaderboard's best models, and a jump
straight to the true end state scores about 0.92 overall with no process shown).

- `static`: the first frame held for the whole video (a lower anchor: nothing happens);
- `end-jump`: the first frame, then the ground-truth final frame held (an upper anchor that knows the answer and
  shows no process).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from .wan import fit_image

TRIVIAL = ("static", "end-jump")


def _check(name: str) -> None:
    if name not in TRIVIAL:
        raise ConfigError(f"unknown trivial method {name!r}; choose from {', '.join(TRIVIAL)}")


def final_frame(path: Any) -> np.ndarray:
    """A ground-truth sample's final frame: final_frame.png, else the last frame of ground_truth.mp4."""
    from ..io import read_png, read_video
    from ..tasks.vbvr import FINAL_FRAME, VIDEO

    return read_png(path / FINAL_FRAME) if (path / FINAL_FRAME).is_file() else read_video(path / VIDEO)[-1]


def trivial_video(name: str, sample: Any, frames: int, height: int, width: int) -> np.ndarray:
    """The trivial method `name`'s video (T, H, W, 3) uint8 for the ground-truth sample folder `sample`."""
    from ..io import read_png
    from ..tasks.vbvr import FIRST_FRAME

    _check(name)
    first = fit_image(read_png(sample / FIRST_FRAME), height, width)
    video = np.repeat(first[None], frames, axis=0)  # (T, H, W, 3)
    if name == "end-jump":
        video[1:] = fit_image(final_frame(sample), height, width)
    return video


def trivial_generator(name: str) -> Any:
    """A vbvr.run.SampleGenerator for a trivial method: the model only sets the size (frames, height, width)."""
    _check(name)  # refused now, not per sample

    def generate(den: Any, inp: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return trivial_video(name, inp.ref.path, inp.frames, inp.height, inp.width), {"trivial": name, "nfe": 0}

    return generate


def write_trivial(refs: Sequence[Any], out: Path, names: Sequence[str] = TRIVIAL) -> None:
    """Every trivial method's video for every sample at its ground truth's own frame count and size, with no model:
    `out/<name>/<split>/<task>/<index>.mp4` (an output root per method, what the kit and `steplens score` read)."""
    from ..io import read_video, write_video
    from ..tasks.vbvr import VIDEO

    for ref in refs:
        t, h, w = read_video(ref.path / VIDEO).shape[:3]
        for name in names:
            write_video(out / name / ref.video_rel, trivial_video(name, ref.path, t, h, w))


__all__ = ["TRIVIAL", "final_frame", "trivial_generator", "trivial_video", "write_trivial"]
