"""`steplens demo`: every analysis on the shipped reference model, with an HTML report."""

from __future__ import annotations

import typer

from ..config import to_json
from .common import DEVICE, MODEL, PRECISION, choose_precision, record_precision

commands = typer.Typer()


@commands.command("demo")
def demo(out: str = typer.Option("demo", "--out", help="Output folder: report.html, summary.json and one folder per stage."),
         model: str = MODEL, quick: bool = typer.Option(False, "--quick", help="Sub-minute version (tests); its verdicts are not meaningful."),
         no_report: bool = typer.Option(False, "--no-report"), device: str = DEVICE, precision: str = PRECISION,
         jobs: int | None = typer.Option(None, "--jobs", min=1, max=2, help="Processes (default: 2 on a CPU with 2+ cores, one torch thread "
                                         "each; 1 on a GPU).")) -> None:
    """Run every analysis on the shipped reference model and write an HTML report (a few minutes on a CPU)."""
    from ..demo import DemoConfig, findings_lines, run_demo

    choice = choose_precision(precision, device)
    summary = run_demo(out, DemoConfig.make(model=model, quick=quick, precision=choice.precision.value), report=not no_report,
                       device=device, jobs=jobs)
    record_precision(out, choice)
    typer.echo(to_json({"total_s": summary["total_s"], "timings_s": summary["timings_s"]}))
    typer.echo("\n".join([*([summary["banner"]] if "banner" in summary else []), "Findings:", *findings_lines(summary["findings"])]))
    typer.echo(f"open {out}/report.html")
