"""`steplens report` and `steplens serve`: thin layers over steplens.report (never re-run a model)."""

from __future__ import annotations

from pathlib import Path

import typer

commands = typer.Typer()


@commands.command("report")
def report(run: Path = typer.Argument(..., help="A run folder, or a folder of run folders (e.g. a demo)."),
           out: Path | None = typer.Option(None, "--out", help="Output file (default: RUN/report.html).")) -> None:
    """Write one self-contained HTML report of a saved run (images inlined); prints its path."""
    from ..report.html import build_report

    typer.echo(str(build_report(run, out)))


@commands.command("serve")
def serve(run: Path = typer.Argument(..., help="A run folder or a parent folder of runs."),
          port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free port)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only).")) -> None:
    """Browse runs, figures, samples and steps in a local, read-only dashboard; prints the URL, Ctrl-C stops."""
    from ..report.serve import make_server, url_of

    try:
        srv = make_server(run, host, port)
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        typer.echo(url_of(srv))
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
