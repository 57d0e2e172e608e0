"""The `steplens` command line: a thin layer over the library, one module per command group.

Every command shares one error path (`common.SteplensGroup`): bad input ends as one line on stderr
and exit code 2, never a traceback; see `common` for what each exit code means.
"""

from __future__ import annotations

import typer

from . import demo, ensemble, evaluate, probe, report, search, tasks, trace, train, vbvr
from .common import SteplensGroup

app = typer.Typer(cls=SteplensGroup, add_completion=False, no_args_is_help=True,
                  help="steplens: see how video diffusion models reason along denoising steps.")


@app.callback()
def _startup() -> None:
    """steplens: see how video diffusion models reason along denoising steps."""
    from ..allocator import keep_freed_memory

    keep_freed_memory()  # CPU sampling 1.25x faster (benchmarks/bench_allocator.py); STEPLENS_MALLOC=default turns it off


app.add_typer(tasks.tasks_app, name="tasks")
app.add_typer(evaluate.commands)  # score, evaluate
app.add_typer(train.commands)  # train, export
app.add_typer(trace.trace_app, name="trace")
app.add_typer(demo.commands)
app.add_typer(probe.probe_app, name="probe")
app.add_typer(ensemble.ensemble_app, name="ensemble")
app.add_typer(search.search_app, name="search")
app.add_typer(vbvr.commands)  # evaluate-vbvr
app.add_typer(report.commands)  # report, serve


def main() -> None:
    app()
