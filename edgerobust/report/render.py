"""Render a run directory as Markdown with PNG plots: `report.md` + `figures/`."""
from __future__ import annotations

from pathlib import Path

from ..io import write_text
from ..run import RunDir, now
from .sections import REPORT_SECTIONS, SECTION_ORDER


def render_report(run: RunDir | str | Path) -> Path:
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    figures = run.file("figures")
    figures.mkdir(exist_ok=True)
    m = run.manifest
    versions = m.get("versions", {})
    parts = [f"# edgerobust report: {m['model']['spec']}", "",
             f"Run `{run.path}`, created {m.get('created')}, rendered {now()}. "
             f"edgerobust {versions.get('edgerobust', '?')}, torch {versions.get('torch', '?')}.", ""]
    for name in SECTION_ORDER:
        text = REPORT_SECTIONS.get(name)(run, figures)
        if text:
            parts.append(text.rstrip() + "\n")
    path = run.file("report.md")
    write_text(path, "\n".join(parts))
    return path
