"""The run, bundle and target a command acts on when the user writes it short (`edgerobust export --target jetson`).

Each helper prints what it chose as the command's first line of output; the choice itself is the library's
(run_select.py, devices/catalog.py `resolve_target`).
"""
from __future__ import annotations

from pathlib import Path

from ..devices import resolve_target
from ..run_select import choose_bundle, choose_run, choose_runs
from .common import console

RUN_HELP = "Run directory (default: the current directory if it is a run, else the most recent run under ./runs)."
TARGET_HELP = "Device profile name, alias (jetson, orin, x86, ...) or .toml path (see `edgerobust devices list`)."


def _note(line: str | None) -> None:
    if line:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def target_note(target: str | None) -> str | None:
    """The line saying which profile an alias stands for ("target jetson → jetson-nano"); an unknown name fails."""
    if target is None:
        return None
    profile, alias = resolve_target(target)
    return f"target {alias} → {profile.name}" if alias else None


def run_argument(run: Path | None, target: str | None = None) -> Path:
    """The run to act on; its line first, then the target's (a bad target fails before the run is looked for)."""
    alias = target_note(target)
    chosen = choose_run(run)
    _note(chosen.note)
    _note(alias)
    return chosen.path


def runs_argument(runs: list[Path] | None, target: str | None = None) -> list[Path]:
    alias = target_note(target)
    paths, note = choose_runs(runs)
    _note(note)
    _note(alias)
    return paths


def bundle_argument(bundle: Path | None) -> Path:
    chosen = choose_bundle(bundle)
    _note(chosen.note)
    return chosen.path
