"""Pieces the CLI modules share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from .precision import PrecisionChoice


class RunByDefault(TyperGroup):
    """A command group whose `run` subcommand is the default: `steplens trace --model m ...` is `trace run --model m ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


PRECISION_HELP = "Network precision: auto (bf16 on CUDA or a CPU with bf16 matrix units (AMX), else fp32), fp32 or bf16."


def precision_option() -> Any:
    """The `--precision` option every model-running command takes (one definition, one help text)."""
    return typer.Option("auto", "--precision", help=PRECISION_HELP)


def resolve_precision(requested: str, device: str = "cpu") -> PrecisionChoice:
    """Resolve `--precision` for `device` and print the choice and the detected capability (stderr).

    A bad value raises ConfigError (the commands turn it into one error line).
    """
    from .precision import choose

    choice = choose(requested, device)
    typer.echo(choice.describe(), err=True)
    return choice


def record_precision(out: str | Path, choice: PrecisionChoice) -> None:
    """OUT/precision.json: what was asked, what ran, the hardware (after the run: a refused resume leaves it as it was)."""
    from .config import write_json

    write_json(Path(out) / "precision.json", choice.to_dict())
