"""What every probe shares: its config, held-out instances, the run folder and figure bookkeeping.

Every probe writes into its run folder: `manifest.json` (kind + config), `summary.json` (headline
numbers), `summary.txt` (a few lines for people), data files (`*.npz`, `*.json`) and
`figures.json` (each figure's path, title, caption and the command that reproduces it), which
is all `steplens report` needs.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, atomic_write_text, to_dict, write_json
from ..runner import Batch, SamplingConfig, held_out_seeds, noise_seed, prepare
from ..runs import RunFolder
from ..tasks import get_task


@dataclass(frozen=True)
class ProbeConfig:
    """Which model, task, instances and sampler a probe runs on."""

    model: str = "maze"
    task: str = "maze"
    size: int = 5
    n: int = 16
    seed: int = 20_000
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch: int = 16

    def __post_init__(self) -> None:
        get_task(self.task)
        if self.n < 1 or self.batch < 1:
            raise ConfigError("n and batch must be >= 1")

    def seeds(self) -> list[int]:
        return held_out_seeds(self.seed, self.n)


def batches(den: Any, cfg: ProbeConfig) -> list[tuple[Batch, list[int]]]:
    """Held-out instances in batches of `cfg.batch`, with each instance's noise seed."""
    task = get_task(cfg.task)
    n_frames = getattr(den, "n_frames", 4)
    out = []
    seeds = cfg.seeds()
    for i in range(0, len(seeds), cfg.batch):
        chunk = seeds[i : i + cfg.batch]
        insts = [task.generate(s, cfg.size, n_frames=n_frames, cell_px=1) for s in chunk]
        out.append((prepare(den, task, insts), [noise_seed(s) for s in chunk]))
    return out


class ProbeRun:
    """A probe's run folder: manifest, figures list and summaries."""

    def __init__(self, out: str | Path, kind: str, config: Any):
        self.folder = RunFolder(out, kind, to_dict(config) if not isinstance(config, dict) else config)
        self.root = self.folder.root
        self.figures: list[dict[str, str]] = []
        self.command = " ".join(shlex.quote(a) for a in ["steplens", *sys.argv[1:]]) if Path(sys.argv[0]).name == "steplens" else ""

    def figure(self, path: str, title: str, caption: str) -> str:
        self.figures.append({"path": path, "title": title, "caption": caption, "command": self.command})
        return str(self.root / path)

    def finish(self, summary: dict[str, Any], text: str) -> dict[str, Any]:
        write_json(self.root / "figures.json", self.figures)
        write_json(self.root / "summary.json", summary)
        atomic_write_text(self.root / "summary.txt", text.rstrip() + "\n")
        return summary


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomic npz write (analysis reads these without re-running a model)."""
    import io

    from ..config import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def upscale(blocks: np.ndarray, px: int) -> np.ndarray:
    return np.repeat(np.repeat(blocks, px, axis=-3), px, axis=-2)


def plt():
    """matplotlib in a headless backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
