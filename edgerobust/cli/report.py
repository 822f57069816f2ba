"""`edgerobust report`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..report import render_report
from .common import command, console
from .defaults import RUN_HELP, run_argument


@command
def report(run: Optional[Path] = typer.Argument(None, help=RUN_HELP)) -> None:
    """Render a run directory as Markdown with PNG plots (report.md)."""
    path = render_report(run_argument(run))
    console.print(f"report: [bold]{path}[/]")
