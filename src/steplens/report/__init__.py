"""HTML reports and a local dashboard, built only from saved run folders."""

from .html import Figure, ReportError, Run, Sample, build_report, load_run, render
from .serve import make_server, running, serve

__all__ = ["Figure", "ReportError", "Run", "Sample", "build_report", "load_run", "make_server", "render", "running", "serve"]
