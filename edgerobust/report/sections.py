"""Report sections: each capability registers `fn(run, figures_dir) -> markdown or None`.

Sections render in registration order; a section returns None when its data is absent.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..registry import Registry
from ..run import RunDir

Section = Callable[[RunDir, Path], "str | None"]
REPORT_SECTIONS: Registry[Section] = Registry("report section")
SECTION_ORDER: list[str] = []


def register_section(name: str, help: str = ""):
    def decorator(fn: Section) -> Section:
        REPORT_SECTIONS.register(name, help)(fn)
        SECTION_ORDER.append(name)
        return fn

    return decorator


def md_table(columns, rows) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
