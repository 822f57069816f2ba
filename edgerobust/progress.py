"""Rich progress bars for long work, written to stderr so stdout stays clean for tables and JSON."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr_console = Console(stderr=True)


def progress_enabled() -> bool:
    return os.environ.get("EDGEROBUST_PROGRESS", "1") != "0" and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(enabled: bool | None = None) -> Iterator[Progress]:
    enabled = progress_enabled() if enabled is None else enabled
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=stderr_console, disable=not enabled, transient=False,
    )
    with progress:
        yield progress
