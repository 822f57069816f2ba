"""Render a run directory as Markdown with PNG plots: `report.md` + `figures/`.

A section whose run file is malformed fails the whole report with one line, and the figures are put back as they
were (new plots removed, replaced ones restored), so a failed report leaves nothing behind.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import EdgeRobustError
from ..io import write_bytes, write_text
from ..run import RunDir, now
from .sections import REPORT_SECTIONS, SECTION_ORDER


def render_report(run: RunDir | str | Path) -> Path:
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    figures = run.file("figures")
    for place in (run.path, figures):  # the report is written into the run: say so before any work
        if place.exists() and not os.access(place, os.W_OK | os.X_OK):
            raise EdgeRobustError(f"cannot write the report: {place} is not writable; make it writable, or copy "
                                  "the run to a writable directory and report the copy")
    existed = figures.is_dir()
    before = {p: p.read_bytes() for p in figures.rglob("*") if p.is_file()} if existed else {}
    figures.mkdir(exist_ok=True)
    try:
        path = _render(run, figures)
    except BaseException:
        _restore(figures, before, existed)
        raise
    return path


def _render(run: RunDir, figures: Path) -> Path:
    m = run.manifest
    versions = m.get("versions", {}) if isinstance(m.get("versions"), dict) else {}
    model = m["model"] if isinstance(m.get("model"), dict) else {}
    parts = [f"# edgerobust report: {model.get('spec', '?')}", "",
             f"Run `{run.path}`, created {m.get('created')}, rendered {now()}. "
             f"edgerobust {versions.get('edgerobust', '?')}, torch {versions.get('torch', '?')}.", ""]
    for name in SECTION_ORDER:
        try:
            text = REPORT_SECTIONS.get(name)(run, figures)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise EdgeRobustError(f"cannot render the {name} section of {run.path}: a run file it reads is "
                                  f"malformed ({type(exc).__name__}: {str(exc)[:80]}); re-run the command that "
                                  "wrote it") from None
        if text:
            parts.append(text.rstrip() + "\n")
    path = run.file("report.md")
    write_text(path, "\n".join(parts))
    return path


def _restore(figures: Path, before: dict[Path, bytes], existed: bool) -> None:
    for path in sorted(figures.rglob("*"), reverse=True):
        if path.is_file() and path not in before:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for path, data in before.items():
        if not path.is_file() or path.read_bytes() != data:
            write_bytes(path, data)
    if not existed and figures.is_dir() and not any(figures.iterdir()):
        figures.rmdir()
