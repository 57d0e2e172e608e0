"""Fake run folders in the documented layout (no model needed), for the report and dashboard tests."""

from __future__ import annotations

import json
from dataclasses import replace
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


STAGES = {"cos": "probe-cos", "behaviour": "probe-behaviour", "perturb": "probe-perturb", "cka": "probe-perturb",
          "layers": "probe-layers", "ensemble": "ensemble-compare", "splice": "probe-splice"}


def demo_summary() -> dict:
    """Stage summaries as the probes write them (a few keys each), with values whose verdicts are known."""
    return {
        "cos": {"n": 40, "solve_rate": 0.8, "solve_rate_ci95": [0.65, 0.9], "off_solution_mass_early_minus_late": 0.02,
                "off_solution_mass_early_minus_late_ci95": [0.01, 0.03], "commit_step": {"median": 0.0, "q90": 9.0},
                "cards": {"n": 40, "complete_alternatives": {"diff": 0.3, "ci95": [0.15, 0.45]},
                          "corrected": {"diff": 0.2, "ci95": [0.08, 0.33]}, "pruned": {"diff": 0.01, "ci95": [-0.03, 0.05]},
                          "model": {"complete_alternatives": {"rate": 0.3}}, "null": {"complete_alternatives": {"rate": 0.0}},
                          "perception": {"applicable": "not measurable on this task: the scene is given"}}},
        "behaviour": {"n": 40, "correction": {"rate": 0.2, "ci95": [0.1, 0.35]}, "pruning": {"rate": 0.1, "ci95": [0.04, 0.23]},
                      "perception": {"action_minus_scene": -1.4, "action_minus_scene_ci95": [-1.9, -1.0]},
                      "memory": {"verdict": "copying: the markers are in the conditioning", "markers_kept_all_steps": 1.0},
                      "markers_kept_all_steps": 1.0, "final_solve_rate": 0.8},
        "perturb": {"n": 24, "modes": ["replace", "renoise"], "clean_solve_rate": 0.917, "by_mode": {
            "replace": {"worst_step": {"index": 15, "mean": 0.0, "lo": 0.0, "hi": 0.0},
                        "worst_frame_before_answer": {"index": 2, "mean": 0.917, "lo": 0.753, "hi": 1.0},
                        "step_minus_frame_drop": 0.917, "step_minus_frame_drop_ci95": [0.75, 1.0], "step_minus_frame_drop_n": 24,
                        "selection": {"step": 15, "frame": 2, "calibration_n": 12, "held_out_n": 12},
                        "worst_step_held_out": {"index": 15, "mean": 0.0, "lo": 0.0, "hi": 0.243, "ci95": [0.0, 0.243], "n": 12},
                        "worst_frame_before_answer_held_out": {"index": 2, "mean": 0.917, "lo": 0.646, "hi": 0.985,
                                                               "ci95": [0.646, 0.985], "n": 12}},
            "renoise": {"worst_step": {"index": 10, "mean": 0.0, "lo": 0.0, "hi": 0.0},
                        "worst_frame_before_answer": {"index": 2, "mean": 0.917, "lo": 0.753, "hi": 1.08},
                        "step_minus_frame_drop": 0.917, "step_minus_frame_drop_ci95": [0.75, 1.0], "step_minus_frame_drop_n": 24,
                        "selection": {"step": 10, "frame": 2, "calibration_n": 12, "held_out_n": 12},
                        "worst_step_held_out": {"index": 10, "mean": 0.0, "lo": 0.0, "hi": 0.243, "ci95": [0.0, 0.243], "n": 12},
                        "worst_frame_before_answer_held_out": {"index": 2, "mean": 0.917, "n": 12}}}},
        "cka": {"n": 8, "modes": ["renoise"], "cka": {"injection_steps": [0, 5, 10, 15], "modes": {"renoise": {
            "x0_hat": {"observed": "final output", "first_minus_last_injection": {"diff": 0.01, "ci95": [-0.02, 0.04]},
                       "fresh_seed": {"mean": 0.6, "lo": 0.5, "hi": 0.7}},
            "blocks.3.resid_post": {"observed": "step 19", "first_minus_last_injection": {"diff": 0.02, "ci95": [0.01, 0.03]}}}}}},
        "layers": {"n": 24, "depth": 2, "most_important_layers": [1, 0], "patch_flip_layer": None,
                   "skip_drop": {"0": {"drop": 0.25, "ci95": [0.0, 0.5]}, "1": {"drop": 0.75, "ci95": [0.5, 1.0]}},
                   "skip_drop_held_out": {"layer": 1, "drop": 0.667, "ci95": [0.35, 0.86], "n": 12,
                                          "selection": "chosen on the calibration half (even samples), measured on the held-out half"},
                   "thirds": {"n": 0, "applicable": "not measurable on this model: 2 blocks, fewer than one per third"}},
        "ensemble": {"n": 16, "methods": {"single": {"n": 16, "solve_rate": 0.75, "solve_rate_ci95": [0.5, 0.9], "nfe": 20},
                                          "ensemble": {"n": 16, "solve_rate": 0.8125, "solve_rate_ci95": [0.57, 0.93], "nfe": 22,
                                                       "diff_vs_single": {"solve_rate": [0.0625, -0.0625, 0.1875]}}}},
        "splice": {"n": 48, "verdict": "measured", "crossing": {"step": 9.0, "ci95": [8.0, 10.0]}},
        "derived": {"skip_drop_top": {"layer": 1, "drop": 0.75, "ci95": [0.5, 1.0], "n": 24}},
        "commands": {k: f"steplens probe {k} --n 4 --out RUN" for k in STAGES},
    }


def make_findings_demo(root: Path, banner: str | None = None) -> Path:
    """A demo folder as `steplens demo` writes it: stage run folders, and summary.json with `findings`."""
    from steplens.findings import SPECS, evaluate

    summary = demo_summary()
    for name, kind in STAGES.items():
        d = make_run(root, name, kind=kind, samples=("s0", "s1") if name == "cos" else ())
        (d / "summary.json").write_text(json.dumps(summary[name]))
        if name == "cos":  # a series of per-sample figures, as the cos probe draws them
            figs = json.loads((d / "figures.json").read_text())
            figs += [{"path": "plot.png", "title": f"Chain-of-Steps strip, s{k}", "caption": "", "command": ""} for k in range(3)]
            (d / "figures.json").write_text(json.dumps(figs))
    specs = [replace(s, figure=f"{s.stage}/plot.png") for s in SPECS]
    summary = {"config": {"model": "maze", "size": 6, "steps": 20}, **({"banner": banner} if banner else {}),
               "findings": evaluate(summary, specs), **summary, "total_s": 150.0}
    (root / "manifest.json").write_text(json.dumps({"kind": "demo", "config": summary["config"]}))
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "summary.txt").write_text("steplens demo: findings\n")
    (root / "figures.json").write_text("[]")
    return root
