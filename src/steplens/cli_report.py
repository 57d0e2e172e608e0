"""`steplens report` and `steplens serve`: thin layers over steplens.report (never re-run a model)."""

from __future__ import annotations

from pathlib import Path

import typer


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the `report` and `serve` commands to `app`."""

    @app.command("report")
    def report(run: Path = typer.Argument(..., help="A run folder, or a folder of run folders (e.g. a demo)."),
               out: Path | None = typer.Option(None, "--out", help="Output file (default: RUN/report.html).")) -> None:
        """Write one self-contained HTML report of a saved run (images inlined); prints its path."""
        from .report.html import ReportError, build_report

        try:
            typer.echo(str(build_report(run, out)))
        except ReportError as e:
            raise _fail(str(e)) from None

    @app.command("serve")
    def serve(run: Path = typer.Argument(..., help="A run folder or a parent folder of runs."),
              port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free port)."),
              host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only).")) -> None:
        """Browse runs, figures, samples and steps in a local, read-only dashboard; prints the URL, Ctrl-C stops."""
        from .report.serve import ReportError, make_server, url_of

        try:
            srv = make_server(run, host, port)
        except ReportError as e:
            raise _fail(str(e)) from None
        except OSError as e:
            raise _fail(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        try:
            typer.echo(url_of(srv))
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            srv.server_close()
