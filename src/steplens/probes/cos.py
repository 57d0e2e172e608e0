"""Chain-of-Steps view: decode x0_hat at every step, show it, and measure candidate pruning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..evaluate import sample_id
from ..runner import Batch, generate
from ..runs import RunFolder
from ..stats import paired_diff, wilson
from ..tasks import get_task
from .common import ProbeConfig, ProbeRun, Record, plt, require_finite, run_sharded, save_npz, split_errors, upscale
from .metrics import maze_step_metrics, self_correction


class Traced(NamedTuple):
    """Decoded clean estimates of every sample at every step, and the samples that failed."""

    insts: list[Any]
    steps: np.ndarray  # (n, S, T, H, W, 3) uint8
    sigmas: np.ndarray  # (S + 1,)
    errors: list[dict[str, Any]]


def trace_batch(den: Any, batch: Batch, noise: list[int], cfg: ProbeConfig, *, tick: Callable[[int], None] | None = None) -> list[Record]:
    """One batch sampled, keeping each sample's decoded x0_hat per step: {"steps": (S, T, H, W, 3) uint8}."""
    per_step: list[np.ndarray] = []
    lat = generate(den, batch, noise, cfg.sampling, callback=lambda e: per_step.append(den.decode(e.x0_hat)))
    require_finite(lat)
    if tick:
        tick(len(batch.instances))
    return [{"steps": s} for s in np.stack(per_step, axis=1)]  # (B, S, T, H, W, 3)


def trace_x0(den: Any, cfg: ProbeConfig, progress: bool = True, *, folder: RunFolder | None = None,
             ray_address: str | None = None, num_workers: int | None = None) -> Traced:
    """Sample every held-out instance (resumably into `folder`, on Ray with `ray_address`), keeping decoded x0_hat per step."""
    recs = run_sharded(den, cfg, trace_batch, folder=folder, label="chain-of-steps", progress=progress,
                       ray_address=ray_address, num_workers=num_workers)
    ok, errors = split_errors(recs)
    task = get_task(cfg.task)
    insts = [task.generate(int(r["seed"]), cfg.size, n_frames=getattr(den, "n_frames", 4), cell_px=1) for r in ok]
    return Traced(insts, np.stack([r["steps"] for r in ok]), cfg.sampling.sigmas(den).numpy(), errors)


def analyse(task_name: str, insts: list[Any], steps: np.ndarray) -> dict[str, Any]:
    """Per-step metrics over samples (pure: from the saved decoded steps)."""
    if task_name != "maze":
        raise ValueError(f"Chain-of-Steps metrics are defined for mazes; got task {task_name!r} (the view works for any task)")
    ms = [maze_step_metrics(i, s[:, -1].astype(np.float32)) for i, s in zip(insts, steps)]
    n_steps = steps.shape[1]
    early = slice(0, max(1, n_steps // 4))
    late = slice(n_steps - max(1, n_steps // 4), n_steps)
    solved = np.array([m.final_correct for m in ms])

    def curve(attr: str, mask: np.ndarray) -> list[float]:
        return np.stack([getattr(m, attr) for m, k in zip(ms, mask) if k]).mean(0).tolist() if mask.any() else []

    off_early = [float(m.off_solution_mass[early].mean()) for m in ms]
    off_late = [float(m.off_solution_mass[late].mean()) for m in ms]
    d, lo, hi, rec = paired_diff(off_late, off_early, rates=False)  # mean(early - late), paired over samples (Student t)
    commits = np.array([m.commit_step for m in ms])
    multi = np.array([bool((m.lit_branches[early] >= 1).any()) for m in ms])
    kinds = [self_correction(m.answer_correct) for m in ms]
    return {
        "n": len(ms),
        "n_steps": n_steps,
        "solve_rate": float(solved.mean()),
        "solve_rate_ci95": list(wilson(int(solved.sum()), len(ms))),
        "per_step": {
            group: {a: curve(a, mask) for a in ("solution_mass", "off_solution_mass", "lit_branches", "answer_correct")}
            for group, mask in (("all", np.ones_like(solved)), ("solved", solved), ("unsolved", ~solved))
        },
        "off_solution_mass_early": float(np.mean(off_early)),
        "off_solution_mass_late": float(np.mean(off_late)),
        "off_solution_mass_early_minus_late": d,
        "off_solution_mass_early_minus_late_ci95": [lo, hi],
        "off_solution_mass_early_minus_late_stats": rec,
        "commit_step": {"mean": float(commits.mean()), "median": float(np.median(commits)),
                        "q10": float(np.quantile(commits, 0.1)), "q90": float(np.quantile(commits, 0.9)),
                        "histogram": np.bincount(commits, minlength=n_steps).tolist()},
        "multiple_candidates_early": float(multi.mean()),
        "multiple_candidates_early_ci95": list(wilson(int(multi.sum()), len(ms))),
        "self_correction": {k: kinds.count(k) for k in ("always", "corrected", "lost", "never")},
    }


def save_views(run: ProbeRun, ids: list[str], steps: np.ndarray, sigmas: np.ndarray, n_views: int, px: int = 8) -> None:
    """Strip images and GIFs of the first samples, plus per-step PNGs for the dashboard."""
    from PIL import Image

    pyplot = plt()
    n_steps = steps.shape[1]
    show = sorted(set(np.linspace(0, n_steps - 1, min(n_steps, 8)).round().astype(int).tolist()))
    for sid, s in zip(ids[:n_views], steps[:n_views]):
        t = s.shape[1]
        fig, axes = pyplot.subplots(len(show), t, figsize=(1.4 * t, 1.4 * len(show)), squeeze=False)
        for r, k in enumerate(show):
            for c in range(t):
                ax = axes[r, c]
                ax.imshow(s[k, c], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(f"step {k}\nσ={sigmas[k]:.2f}", fontsize=7)
                if r == 0:
                    ax.set_title(f"frame {c}", fontsize=8)
        fig.suptitle(f"{sid}: decoded x0_hat (rows: denoising steps, columns: frames)", fontsize=8)
        fig.tight_layout()
        fig.savefig(run.figure(f"strip_{sid}.png", f"Chain-of-Steps strip, {sid}",
                               "Each row decodes the model's clean estimate x0_hat at one denoising step; columns are video frames. "
                               "Early rows show several candidate routes in path colour; later rows keep one."), dpi=110)
        pyplot.close(fig)
        tiles = [np.concatenate(list(upscale(s[k], px)), axis=1) for k in range(n_steps)]
        gif = [Image.fromarray(tile) for tile in tiles]
        gif[0].save(run.figure(f"steps_{sid}.gif", f"Denoising animation, {sid}", "All frames side by side; the animation runs over denoising steps."),
                    save_all=True, append_images=gif[1:], duration=250, loop=0)
        d = run.root / "steps" / sid
        d.mkdir(parents=True, exist_ok=True)
        for k, tile in enumerate(tiles):
            Image.fromarray(tile).save(d / f"step_{k:03d}.png")
        (d / "meta.json").write_text(f'{{"sigmas": {sigmas[:-1].round(4).tolist()}, "n_steps": {n_steps}}}\n')


def plot_curves(run: ProbeRun, a: dict[str, Any]) -> None:
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 4, figsize=(15, 3.2))
    titles = {"solution_mass": "path colour on the true path", "off_solution_mass": "path colour off the path",
              "lit_branches": "lit dead-end branches", "answer_correct": "decoded answer correct"}
    for ax, (key, title) in zip(axes, titles.items()):
        for group, style in (("solved", "-"), ("unsolved", "--"), ("all", ":")):
            ys = a["per_step"][group][key]
            if ys:
                ax.plot(range(len(ys)), ys, style, label=group)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("denoising step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run.figure("cos_curves.png", "Chain-of-Steps metrics per step",
                           "Means over samples, split by whether the final answer is correct. Candidate mass off the true path "
                           "rises early and is pruned as denoising proceeds."), dpi=110)
    pyplot.close(fig)
    fig, ax = pyplot.subplots(figsize=(5, 3))
    ax.bar(range(a["n_steps"]), a["commit_step"]["histogram"])
    ax.set_xlabel("commit step (decoded answer never changes after it)")
    ax.set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(run.figure("commit_hist.png", "Commit step distribution", "When does the decoded answer stop changing?"), dpi=110)
    pyplot.close(fig)


def run_cos(den: Any, cfg: ProbeConfig, out: str, *, n_views: int = 4, progress: bool = True, traced: Traced | None = None,
            ray_address: str | None = None, num_workers: int | None = None) -> dict[str, Any]:
    """`traced`: the samples already traced with `cfg` (the demo shares them with the behaviour probe)."""
    run = ProbeRun(out, "probe-cos", cfg)
    if traced is None:
        traced = trace_x0(den, cfg, progress, folder=run.folder, ray_address=ray_address, num_workers=num_workers)
    insts, steps, sigmas, errors = traced
    ids = [sample_id(cfg.task, cfg.size, i.seed) for i in insts]
    save_npz(run.root / "cos_steps.npz", x0_hat=steps, sigmas=sigmas, seeds=np.array([i.seed for i in insts]))
    save_views(run, ids, steps, sigmas, n_views)
    task = get_task(cfg.task)
    final = [task.score(i, s[-1]) for i, s in zip(insts, steps)]
    summary: dict[str, Any] = {"final_solve_rate": float(np.mean([f.success for f in final])), "n_errors": len(errors), "errors": errors}
    text = [f"Chain-of-Steps on {cfg.n} held-out {cfg.task} {cfg.size}x{cfg.size} instances, {cfg.sampling.steps} {cfg.sampling.sampler} steps."]
    if cfg.task == "maze":
        a = analyse(cfg.task, insts, steps)
        plot_curves(run, a)
        summary.update(a)
        c = a["commit_step"]
        text += [f"solve rate {a['solve_rate']:.2f}; commit step median {c['median']:.0f} (q10 {c['q10']:.0f}, q90 {c['q90']:.0f}) of {a['n_steps']}",
                 f"off-path candidate mass: early {a['off_solution_mass_early']:.3f} vs late {a['off_solution_mass_late']:.3f} "
                 f"(diff {a['off_solution_mass_early_minus_late']:.3f}, 95% CI {a['off_solution_mass_early_minus_late_ci95'][0]:.3f}..{a['off_solution_mass_early_minus_late_ci95'][1]:.3f})",
                 f"samples with a lit dead-end branch in the first quarter of steps: {a['multiple_candidates_early']:.2f}",
                 f"self-correction: {a['self_correction']}"]
    if errors:
        text.append(f"{len(errors)} samples failed and are left out (listed in summary.json); re-running the command retries them")
    return run.finish(summary, "\n".join(text))
