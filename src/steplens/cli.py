"""The `steplens` command line: a thin layer over the library."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="steplens: see how video diffusion models reason along denoising steps.")
tasks_app = typer.Typer(no_args_is_help=True, help="Generate, inspect and audit reasoning tasks.")
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def tasks_list() -> None:
    """List the known tasks."""
    from rich.console import Console
    from rich.table import Table

    from .tasks import TASKS

    table = Table("task", "sizes", "default", "description")
    for name, t in sorted(TASKS.items()):
        table.add_row(name, f"{min(t.sizes)}..{max(t.sizes)}", str(t.default_size), t.description)
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
