"""Trivial videos that need no model, run beside every model on the official layout: a benchmark number is evidence
only above them (VBVR-EvalKit issue 240: first-frame-only videos outscore the leaderboard's best models, and a jump
straight to the true end state scores about 0.92 overall with no process shown).

- `static`: the first frame held for the whole video (a lower anchor: nothing happens);
- `end-jump`: the first frame, then the ground-truth final frame held (an upper anchor that knows the answer and
  shows no process).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import ConfigError
from .wan import fit_image

TRIVIAL = ("static", "end-jump")


def final_frame(path: Any) -> np.ndarray:
    """A ground-truth sample's final frame: final_frame.png, else the last frame of ground_truth.mp4."""
    from ..io import read_png, read_video
    from ..tasks.vbvr import FINAL_FRAME, VIDEO

    return read_png(path / FINAL_FRAME) if (path / FINAL_FRAME).is_file() else read_video(path / VIDEO)[-1]


def trivial_generator(name: str) -> Any:
    """A vbvr.run.SampleGenerator for a trivial method: the model only sets the size (frames, height, width)."""
    from ..io import read_png
    from ..tasks.vbvr import FIRST_FRAME

    if name not in TRIVIAL:
        raise ConfigError(f"unknown trivial method {name!r}; choose from {', '.join(TRIVIAL)}")

    def generate(den: Any, inp: Any) -> tuple[np.ndarray, dict[str, Any]]:
        first = fit_image(read_png(inp.ref.path / FIRST_FRAME), inp.height, inp.width)
        video = np.repeat(first[None], inp.frames, axis=0)  # (T, H, W, 3)
        if name == "end-jump":
            video[1:] = fit_image(final_frame(inp.ref.path), inp.height, inp.width)
        return video, {"trivial": name, "nfe": 0}

    return generate


__all__ = ["TRIVIAL", "final_frame", "trivial_generator"]
