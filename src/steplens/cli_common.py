"""Pieces the CLI modules share."""

from __future__ import annotations

import click
from typer.core import TyperGroup


class RunByDefault(TyperGroup):
    """A command group whose `run` subcommand is the default: `steplens trace --model m ...` is `trace run --model m ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)
