"""Emergent behaviours as numbers over samples, from the decoded x0_hat of every step.

- self-correction (any task): the task scorer applied to x0_hat's video at every step; a sample is
  'corrected' if it is wrong at some step and right at the end, 'lost' if the reverse.
- working memory (maze): the start and goal markers must be carried into the last frame, which the
  model generates (frame 0 is given). Per step: the fraction of samples whose last-frame x0_hat
  shows both markers in place.
- perception before action (maze): the step at which the scene (walls, floor, markers: what
  the puzzle is) settles, against the step at which the path (the action) commits. Paired over
  samples; perception-before-action means scene settle < path commit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..stats import bootstrap_diff, wilson
from ..tasks import get_task
from ..tasks.base import classify_blocks
from ..tasks.maze import MAZE_COLORS, PATH
from .common import ProbeConfig, ProbeRun, plt, save_npz
from .cos import Traced, trace_x0
from .metrics import commit_step, self_correction


def step_success(task_name: str, insts: list[Any], steps: np.ndarray) -> np.ndarray:
    """(n, S) bool: does x0_hat at each step already solve the task?"""
    task = get_task(task_name)
    return np.array([[task.score(i, v).success for v in s] for i, s in zip(insts, steps)])


def maze_memory_and_order(insts: list[Any], steps: np.ndarray) -> dict[str, Any]:
    """Marker memory per step, and scene-settle vs path-commit steps per sample."""
    markers, scene_settle, path_commit = [], [], []
    for inst, s in zip(insts, steps):
        last = s[:, -1].astype(np.float32)  # (S, H, W, 3)
        cls = np.stack([classify_blocks(b, MAZE_COLORS) for b in last])  # (S, H, W)
        ok = (cls[:, inst.start[0], inst.start[1]] == MAZE_COLORS.index("green")) & (cls[:, inst.goal[0], inst.goal[1]] == MAZE_COLORS.index("red"))
        markers.append(ok)
        # the scene: every block's class with path colour folded into floor (what is where, not the answer)
        scene = np.where(cls == MAZE_COLORS.index(PATH), MAZE_COLORS.index("white"), cls)
        scene_settle.append(commit_step(list(scene)))
        path_commit.append(commit_step(list(cls == MAZE_COLORS.index(PATH))))
    markers_arr = np.array(markers)  # (n, S)
    d, lo, hi = bootstrap_diff(scene_settle, path_commit)  # mean(path - scene)
    return {
        "markers_present_per_step": markers_arr.mean(0).tolist(),
        "markers_kept_all_steps": float(markers_arr.all(1).mean()),
        "scene_settle_step_mean": float(np.mean(scene_settle)),
        "path_commit_step_mean": float(np.mean(path_commit)),
        "path_minus_scene_steps": d,
        "path_minus_scene_steps_ci95": [lo, hi],
        "perception_first_fraction": float(np.mean(np.array(scene_settle) < np.array(path_commit))),
        "_scene": scene_settle,
        "_path": path_commit,
    }


def run_behaviour(den: Any, cfg: ProbeConfig, out: str, *, progress: bool = True, traced: Traced | None = None,
                  ray_address: str | None = None, num_workers: int | None = None) -> dict[str, Any]:
    """`traced`: the samples already traced with `cfg` (e.g. by the CoS probe), to reuse."""
    run = ProbeRun(out, "probe-behaviour", cfg)
    if traced is None:
        traced = trace_x0(den, cfg, progress, folder=run.folder, ray_address=ray_address, num_workers=num_workers)
    insts, steps, sigmas, errors = traced
    save_npz(run.root / "behaviour_steps.npz", x0_hat=steps, sigmas=sigmas, seeds=np.array([i.seed for i in insts]))
    ok = step_success(cfg.task, insts, steps)
    kinds = [self_correction(r) for r in ok]
    n = len(kinds)
    counts = {k: kinds.count(k) for k in ("always", "corrected", "lost", "never")}
    summary: dict[str, Any] = {
        "n": n,
        "final_solve_rate": float(ok[:, -1].mean()),
        "success_per_step": ok.mean(0).tolist(),
        "self_correction": counts,
        "corrected_rate": counts["corrected"] / n,
        "corrected_rate_ci95": list(wilson(counts["corrected"], n)),
        "lost_rate": counts["lost"] / n,
        "lost_rate_ci95": list(wilson(counts["lost"], n)),
        "n_errors": len(errors), "errors": errors,
    }
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(5.5, 3.2))
    ax.plot(ok.mean(0), label="x0_hat solves the task")
    text = [f"Behaviours on {n} held-out {cfg.task} {cfg.size}x{cfg.size} instances ({cfg.sampling.steps} steps).",
            f"self-correction: {counts['corrected']} corrected (wrong at some step, right at the end), {counts['lost']} lost, "
            f"{counts['always']} right throughout, {counts['never']} never right"]
    if cfg.task == "maze":
        m = maze_memory_and_order(insts, steps)
        scene, path = m.pop("_scene"), m.pop("_path")
        summary.update(m)
        ax.plot(m["markers_present_per_step"], label="start+goal kept in last frame")
        text += [f"working memory: start and goal markers kept at every step in {m['markers_kept_all_steps']:.2f} of samples",
                 f"perception before action: scene settles at step {m['scene_settle_step_mean']:.1f}, path commits at step "
                 f"{m['path_commit_step_mean']:.1f} (difference {m['path_minus_scene_steps']:.1f}, 95% CI "
                 f"{m['path_minus_scene_steps_ci95'][0]:.1f}..{m['path_minus_scene_steps_ci95'][1]:.1f}); scene first in "
                 f"{m['perception_first_fraction']:.2f} of samples"]
        fig2, ax2 = pyplot.subplots(figsize=(4, 4))
        ax2.scatter(scene, path, alpha=0.5)
        lim = cfg.sampling.steps
        ax2.plot([0, lim], [0, lim], "k:")
        ax2.set_xlabel("scene settles (step)")
        ax2.set_ylabel("path commits (step)")
        fig2.tight_layout()
        fig2.savefig(run.figure("perception_vs_action.png", "Perception before action",
                                "Each dot is a sample: when the scene (walls, markers) stops changing vs when the path does. "
                                "Dots above the diagonal: the model settles what the puzzle is before it settles the answer."), dpi=110)
        pyplot.close(fig2)
    ax.set_xlabel("denoising step")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run.figure("behaviour_per_step.png", "Per-step success and marker memory",
                           "Fraction of samples whose clean estimate at each step already solves the task, and keeps the start/goal markers."), dpi=110)
    pyplot.close(fig)
    return run.finish(summary, "\n".join(text))
