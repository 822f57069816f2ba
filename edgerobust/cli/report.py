"""`edgerobust report`."""
from __future__ import annotations

from pathlib import Path

import typer

from ..report import render_report
from .common import command, console


@command
def report(run: Path = typer.Argument(..., help="Run directory.")) -> None:
    """Render a run directory as Markdown with PNG plots (report.md)."""
    path = render_report(run)
    console.print(f"report: [bold]{path}[/]")
