"""`steplens report` and `steplens serve`: thin layers over steplens.report."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(run: str = typer.Argument(..., help="A run folder, or a folder of runs."),
               out: str = typer.Option("", "--out", help="Output file (default RUN/report.html).")) -> None:
        """Render a self-contained HTML report of a saved run (never re-runs a model)."""
        from .report.html import ReportError, build_report

        try:
            typer.echo(str(build_report(run, out or None)))
        except ReportError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    @app.command()
    def serve(run: str = typer.Argument(..., help="A run folder or a parent of runs."),
              port: int = typer.Option(8765, "--port"), host: str = typer.Option("127.0.0.1", "--host")) -> None:
        """Browse runs, samples and steps in a local, read-only dashboard."""
        from .report.serve import ReportError, make_server

        try:
            srv = make_server(run, host, port)
        except (ReportError, OSError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"serving {run} on http://{host}:{srv.server_address[1]}  (Ctrl-C to stop)")
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            srv.server_close()
