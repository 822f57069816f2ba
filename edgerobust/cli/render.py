"""Rich tables shared by commands."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from ..run import RunDir
from .common import console


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table whose title and cells are plain text: a `[` in a device's or a user's string is never markup
    (pass a `rich.text.Text` for a styled cell)."""
    out = Table(title=Text(title), title_justify="left")
    for i, col in enumerate(columns):
        out.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*(v if isinstance(v, Text) else Text(fmt(v)) for v in row))
    return out


def print_run_summary(run: RunDir) -> None:
    m = run.manifest
    metrics = m.get("metrics", {})
    rows = [("model", m["model"]["spec"]), ("dataset", run.dataset_name),
            ("parameters", metrics.get("parameters")), ("FLOPs / image", metrics.get("flops")),
            ("train accuracy", metrics.get("train_accuracy")), ("test accuracy", metrics.get("test_accuracy"))]
    pca = m["model"].get("pca")
    if pca:
        rows.insert(1, ("PCA first layer", f"{pca['components']}/{pca['dims']} components"))
    console.print(table("training", ("", "value"), rows))
