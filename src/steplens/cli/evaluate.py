"""`steplens score` and `steplens evaluate`: score videos with the tasks' rule-based scorers; sample and score held-out instances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from .common import (DEVICE, MODEL, OUT, RAY, SAMPLER, SHIFT, SIZE, STEPS, TASK, WORKERS, batch_option, n_option, sample_failures,
                     sampling_config, seed_option)

commands = typer.Typer()


@commands.command("score")
def score(
    data_dir: Path = typer.Argument(..., help="Folder of samples: ROOT/<sample>/ or ROOT/<split>/<task>/<sample>/."),
    videos: Path | None = typer.Option(None, "--videos", help="Folder of model videos <sample>.mp4 or <sample>/ frames (default: each sample's ground truth)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per sample, then a summary line."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON lines to this .jsonl file."),
) -> None:
    """Score every sample's video with its task's rule-based scorer; exit 1 if some samples could not be scored, 2 if none could."""
    from ..config import atomic_write_text
    from ..scoring import score_folder

    summary = score_folder(data_dir, videos)
    lines = [json.dumps(r.to_dict()) for r in summary.results] + [json.dumps({"summary": summary.to_dict()})]
    if out is not None:
        atomic_write_text(out, "\n".join(lines) + "\n")
    if as_json:
        for line in lines:
            typer.echo(line)
    else:
        _print_summary(summary)
    if summary.n_errors:
        raise sample_failures(summary.n_errors, summary.n, summary.errors[0])


def _print_summary(summary: Any) -> None:
    """A rich table of per-task and overall means, then the errors."""
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table("task", "n", "errors", "success", "score")
    for name, t in summary.per_task.items():
        table.add_row(name, str(t.n), str(t.n_errors), fmt(t.success), fmt(t.score))
    o = summary.overall
    table.add_row("[bold]all", str(o.n), str(o.n_errors), fmt(o.success), fmt(o.score))
    console = Console()
    console.print(table)
    for err in summary.errors:
        console.print(f"[red]sample error:[/red] {err}", highlight=False, markup=True)


@commands.command("evaluate")
def evaluate(
    out: str = OUT,
    model: str = MODEL,
    task: str = TASK,
    size: int = SIZE,
    n: int = n_option(100),
    seed: int = seed_option(10_000),
    steps: int | None = STEPS,
    shift: float | None = SHIFT,
    sampler: str = SAMPLER,
    batch: int = batch_option(50),
    ray: str | None = RAY,
    workers: int | None = WORKERS,
    device: str = DEVICE,
) -> None:
    """Sample held-out instances with a model, score them, and report the solve rate with a 95% CI (resumable).

    Exit 1 when some samples could not be scored (a re-run retries them), 2 when none could."""
    from ..evaluate import EvalConfig, evaluate as run_eval
    from ..models.registry import load

    cfg = EvalConfig(model=model, task=task, size=size, n=n, seed=seed, batch=batch,
                     sampling=sampling_config(model, steps, shift, sampler))
    summary = run_eval(None if ray else load(model, device=device), cfg, out, ray_address=ray, num_workers=workers, device=device)
    keys = ("n", "solved", "solve_rate", "solve_rate_ci95", "mean_score", "n_errors", "n_computed_this_call", "wall_s_this_call")
    typer.echo(json.dumps({k: summary.get(k) for k in keys}))
    if summary["n_errors"]:  # summary["n"] counts the scored samples
        raise sample_failures(summary["n_errors"], summary["n"] + summary["n_errors"], summary["errors"][0]["error"])
