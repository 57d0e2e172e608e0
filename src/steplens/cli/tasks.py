"""`steplens tasks ...`: list, generate and audit the reasoning tasks."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import EXIT_FAILED, seed_option

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
        table.add_row(name, f"{min(t.sizes)}..{max(t.sizes)}", str(t.default_size), t.description)
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
    seed: int = seed_option(0),
    size: int | None = SIZE,
) -> None:
    """Check TASK's generator and scorer (ground truth passes, corruptions fail); exit 1 if the audit fails."""
    from ..tasks.audit import audit_task, format_report

    report = audit_task(task, n, seed, size)
    typer.echo(format_report(report))
    if not report.passed:
        raise typer.Exit(EXIT_FAILED)
