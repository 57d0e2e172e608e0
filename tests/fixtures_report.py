"""Fake run folders in the documented layout (no model needed), for the report and dashboard tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COMMAND = "steplens probe cos --n 3 --out run"


def _frame(value: int, k: int) -> Image.Image:
    """A 24x16 'decode' whose lit square moves with the step, so each step looks different."""
    a = np.full((16, 24, 3), value, np.uint8)
    a[4:12, 2 + 4 * k : 10 + 4 * k] = (220, 40, 40)
    return Image.fromarray(a)


def make_run(root: Path, name: str = "run", caption: str = "a caption", kind: str = "probe-test",
             n_steps: int = 3, samples: tuple[str, ...] = ("s0", "s1")) -> Path:
    """A run folder: a PNG plot, an animated GIF, nested summary.json, summary.txt and per-step decodes."""
    d = root / name
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 480, 3), dtype=np.uint8)).save(d / "plot.png")
    frames = [_frame(v, k) for k, v in enumerate(np.linspace(0, 255, n_steps).astype(int))]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    for s in samples:
        (d / "steps" / s).mkdir(parents=True)
        for k, f in enumerate(frames):
            f.save(d / "steps" / s / f"step_{k:03d}.png")
        sigmas = np.linspace(1, 0, n_steps, endpoint=False).tolist()
        (d / "steps" / s / "meta.json").write_text(json.dumps({"sigmas": sigmas, "n_steps": n_steps}))
    (d / "manifest.json").write_text(json.dumps({"kind": kind, "config": {"n": 3, "sampling": {"steps": n_steps, "shift": 1.0}}}))
    (d / "summary.json").write_text(json.dumps({
        "solve_rate": 0.8123456, "solve_rate_ci95": [0.7, 0.9], "n": 3, "wall_s": 1234.5, "tiny": 1.234e-5,
        "per_step": [0.1, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9],
        "nested": {"a": 1, "deeper": {"b": 0.123456}, "drop": {"mean": 0.25, "ci95": [0.1, 0.4]}},
        "rows": [{"index": 0, "mean": 1.0}, {"index": 2, "mean": 0.5}]}))
    (d / "summary.txt").write_text("three lines\nof <b>text</b>\nend\n")
    (d / "figures.json").write_text(json.dumps([
        {"path": "plot.png", "title": "A plot", "caption": caption, "command": COMMAND},
        {"path": "anim.gif", "title": "An animation", "caption": "gif", "command": ""}]))
    return d


def make_demo(root: Path) -> Path:
    """A parent folder (like `steplens demo`) with its own summary and figure, and two run folders inside."""
    make_run(root, "cos", kind="probe-cos")
    make_run(root, "behaviour", kind="probe-behaviour", samples=())
    (root / "manifest.json").write_text(json.dumps({"kind": "demo", "config": {"quick": True}}))
    (root / "summary.json").write_text(json.dumps({"cos": {"solve_rate": 0.5}, "total_s": 12.0}))
    (root / "summary.txt").write_text("steplens demo: two stages\n")
    (root / "figures.json").write_text(json.dumps([
        {"path": "cos/plot.png", "title": "Headline plot", "caption": "from a stage", "command": "steplens demo --out demo"}]))
    return root
