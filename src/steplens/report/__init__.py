"""HTML reports and a local dashboard, built only from saved run folders."""

from .html import ReportError, build_report, render

__all__ = ["ReportError", "build_report", "render"]
