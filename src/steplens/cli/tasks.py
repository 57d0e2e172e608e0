"""`steplens tasks ...`: list, generate and audit the reasoning tasks."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import EXIT_FAILED, fail

tasks_app = typer.Typer(no_args_is_help=True, help="Generate, inspect and audit reasoning tasks.")
TASK_ARG = typer.Argument(..., help="Task name (see `steplens tasks list`).")
SIZE = typer.Option(None, "--size", help="Task size (default: the task's default).")


@tasks_app.command("list")
def tasks_list() -> None:
    """List the known tasks."""
    from rich.console import Console
    from rich.table import Table

    from ..tasks import TASKS

    table = Table("task", "sizes", "default", "description")
    for name, t in sorted(TASKS.items()):
        lo, hi = min(t.sizes), max(t.sizes)
        table.add_row(name, f"{lo}..{hi}" if list(t.sizes) == list(range(lo, hi + 1)) else ",".join(map(str, t.sizes)), str(t.default_size), t.description)
    Console().print(table)


@tasks_app.command("generate")
def tasks_generate(
    task: str = TASK_ARG,
    n: int = typer.Option(..., "--n", min=1, help="Number of samples."),
    seed: int = typer.Option(0, "--seed", min=0, help="Sample i uses seed SEED + i."),
    out: Path = typer.Option(..., "--out", help="Folder to write the sample folders into (see --layout)."),
    size: int | None = SIZE,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace sample folders that already exist."),
    layout: str = typer.Option("flat", "--layout", help="flat: OUT/<task>_<i>/; vbvr: the official OUT/<split>/steplens-<task>/<i:05d>/."),
    split: str = typer.Option("In-Domain_50", "--split", help="With --layout vbvr: the split folder (In-Domain_50 or Out-of-Domain_50)."),
) -> None:
    """Write N samples of TASK in the VBVR-Bench folder format."""
    from ..tasks.vbvr import generate_set

    paths = generate_set(task, n, seed, out, size=size, progress=True, overwrite=overwrite, layout=layout, split=split)
    typer.echo(f"wrote {len(paths)} samples to {out}")


@tasks_app.command("audit")
def tasks_audit(
    task: str = TASK_ARG,
    n: int = typer.Option(100, "--n", min=1, help="Number of instances to audit."),
    seed: int | None = typer.Option(None, "--seed", min=0, help="First seed (default 0; with --leakage, the first evaluation seed, 10000)."),
    size: int | None = SIZE,
    leakage: bool = typer.Option(False, "--leakage", help="Instead: estimated distinct instances at the level (Chao1 over --draws), "
                                 "and the evaluation seeds' overlap with training draws (and with --model's seen-set)."),
    draws: int = typer.Option(3000, "--draws", min=2, help="With --leakage: training-range seeds drawn for the estimate."),
    model: str | None = typer.Option(None, "--model", help="With --leakage: a model whose seen-set the evaluation seeds are checked against."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Check TASK's generator and scorer (ground truth passes, corruptions fail); exit 1 if the audit fails.

    --leakage: how memorisable the level is (`"memorisable": true` below 10,000 distinct instances), from generation only."""
    from ..config import to_json
    from ..tasks.audit import audit_task, format_report, leakage as leak

    if leakage:
        from ..seen import load_seen

        from ..evaluate import model_frames

        frames = None if model is None else model_frames(None, model)
        rep = leak(task, size, draws=draws, seed=10_000 if seed is None else seed, n=n, n_frames=frames,
                   seen=None if model is None else load_seen(model))
        typer.echo(to_json({**rep, "model": model}) if as_json else "\n".join(f"{k}: {v}" for k, v in {**rep, "model": model}.items()))
        return
    if model is not None:
        raise fail("--model applies to --leakage only")
    report = audit_task(task, n, 0 if seed is None else seed, size)
    if as_json:
        typer.echo(to_json(report.to_dict()))
        if not report.passed:
            raise typer.Exit(EXIT_FAILED)
        return
    typer.echo(format_report(report))
    if not report.passed:
        raise typer.Exit(EXIT_FAILED)
