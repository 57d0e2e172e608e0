"""A fake run folder in the documented layout (no model needed)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_run(root: Path, name: str = "run", caption: str = "a caption") -> Path:
    d = root / name
    (d / "steps" / "s0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(d / "plot.png")
    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (0, 120, 255)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    for k, f in enumerate(frames):
        f.save(d / "steps" / "s0" / f"step_{k:03d}.png")
    (d / "steps" / "s0" / "meta.json").write_text(json.dumps({"sigmas": [1.0, 0.5, 0.1], "n_steps": 3}))
    (d / "manifest.json").write_text(json.dumps({"kind": "probe-test", "config": {"n": 3}}))
    (d / "summary.json").write_text(json.dumps({"solve_rate": 0.8123456, "solve_rate_ci95": [0.7, 0.9], "nested": {"a": 1}}))
    (d / "summary.txt").write_text("three lines\nof <b>text</b>\n")
    (d / "figures.json").write_text(json.dumps([
        {"path": "plot.png", "title": "A plot", "caption": caption, "command": "steplens probe cos --out run"},
        {"path": "anim.gif", "title": "An animation", "caption": "gif", "command": ""}]))
    return d
