"""`steplens evaluate`: sample held-out instances, score them, report the solve rate with a 95% CI."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ConfigError, to_dict, write_json
from .runner import SamplingConfig, generate, held_out_seeds, noise_seed, prepare, score_latents
from .runs import RunFolder
from .stats import mean_ci, wilson
from .tasks import get_task


@dataclass(frozen=True)
class EvalConfig:
    model: str = "maze"
    task: str = "maze"
    size: int = 5
    n: int = 100
    seed: int = 10_000
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch: int = 50
    save_frames: bool = True

    def __post_init__(self) -> None:
        get_task(self.task)
        if self.n < 1 or self.batch < 1:
            raise ConfigError("n and batch must be >= 1")


def sample_id(task: str, size: int, seed: int) -> str:
    return f"{task}_{size}_{seed:010d}"


def eval_seeds(denoiser: Any, task_name: str, size: int, seeds: Sequence[int], sampling: SamplingConfig) -> list[dict[str, Any]]:
    """Generate, sample and score the instances of `seeds` (one batch); returns result dicts with frames."""
    task = get_task(task_name)
    n_frames = getattr(denoiser, "n_frames", 4)
    insts = [task.generate(int(s), size, n_frames=n_frames, cell_px=1) for s in seeds]
    batch = prepare(denoiser, task, insts)
    lat = generate(denoiser, batch, [noise_seed(int(s)) for s in seeds], sampling)
    frames = denoiser.decode(lat)
    scores = [task.score(i, f) for i, f in zip(insts, frames)]
    return [{"task": task_name, "size": size, "seed": int(s), **sc.to_dict(), "frames": fr} for s, sc, fr in zip(seeds, scores, frames)]


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r]
    k = sum(bool(r["success"]) for r in ok)
    lo, hi = wilson(k, len(ok))
    m, mlo, mhi = mean_ci([r["score"] for r in ok])
    return {"n": len(ok), "n_errors": len(results) - len(ok), "solved": k, "solve_rate": k / len(ok) if ok else float("nan"),
            "solve_rate_ci95": [lo, hi], "mean_score": m, "mean_score_ci95": [mlo, mhi]}


def evaluate(denoiser: Any, cfg: EvalConfig, out: str | Path, *, progress: bool = True,
             on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Evaluate into run folder `out` (resumable: finished samples are skipped)."""
    from PIL import Image

    run = RunFolder(out, "evaluate", to_dict(cfg))
    seeds = held_out_seeds(cfg.seed, cfg.n)
    ids = [sample_id(cfg.task, cfg.size, s) for s in seeds]
    todo = [s for s, i in zip(seeds, ids) if not run.done(i)]
    t0 = time.time()
    from rich.progress import Progress

    with Progress(disable=not progress) as bar:
        tid = bar.add_task(f"evaluate {cfg.task} {cfg.size}x{cfg.size}", total=cfg.n, completed=cfg.n - len(todo))
        for start in range(0, len(todo), cfg.batch):
            chunk = todo[start : start + cfg.batch]
            for r in eval_seeds(denoiser, cfg.task, cfg.size, chunk, cfg.sampling):
                frames = r.pop("frames")
                sid = sample_id(cfg.task, cfg.size, r["seed"])
                if cfg.save_frames:
                    strip = np.concatenate(list(np.repeat(np.repeat(frames, 4, 1), 4, 2)), axis=1)  # frames side by side, 4x
                    (run.root / "frames").mkdir(exist_ok=True)
                    Image.fromarray(strip).save(run.root / "frames" / f"{sid}.png")
                run.write(sid, r)
            bar.update(tid, advance=len(chunk))
            if on_batch:
                on_batch(start + len(chunk))
    results = run.results(ids)
    run.write_jsonl("results.jsonl", results)
    summary = {"config": to_dict(cfg), **summarize(results), "wall_s_this_call": round(time.time() - t0, 2)}
    write_json(run.root / "summary.json", summary)
    return summary
