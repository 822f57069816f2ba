"""Which run (or bundle) a command acts on when none is named: the current directory when it is a run, else the most
recent run under ./runs, by its manifest's time. The choice is returned with a line saying so, for the first line of
a command's output; a directory that looks like a run but cannot be read is an error naming it, never skipped.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EdgeRobustError
from .run import BUNDLE_MANIFEST, MANIFEST_NAME, RunDir

RUNS_DIR = "runs"
NO_RUN = ("no run in the current directory or under ./runs; make one with `edgerobust pipeline` "
          "(or `edgerobust train`), or pass RUN")


@dataclass(frozen=True)
class Chosen:
    path: Path
    note: str | None = None  # "using runs/pipeline/compressed, the most recent run; pass RUN to choose another"


def shown(path: Path, cwd: Path) -> str:
    """`path` relative to `cwd` where it lies under it (as a user would type it)."""
    try:
        relative = path.resolve().relative_to(cwd.resolve())
    except ValueError:
        return str(path)
    return str(relative) if str(relative) != "." else "."


def open_run(path: Path) -> RunDir:
    """A directory that looks like a run (it has model.json), opened, or an error naming it and what is wrong."""
    try:
        return RunDir.open(path)
    except EdgeRobustError as exc:
        raise EdgeRobustError(f"{path} looks like a run but cannot be used: {exc}; fix or remove it, "
                              "or pass RUN") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeRobustError(f"{path} looks like a run but {path / MANIFEST_NAME} cannot be read "
                              f"({type(exc).__name__}); fix or remove it, or pass RUN") from None


def _time(run: RunDir) -> float:
    """The manifest's time (its last update, else its creation); the file's mtime when neither parses."""
    for key in ("updated", "created"):
        value = run.manifest.get(key)
        if isinstance(value, str):
            try:
                return _dt.datetime.fromisoformat(value).timestamp()
            except ValueError:
                pass
    return (run.path / MANIFEST_NAME).stat().st_mtime


def runs_under(root: Path) -> list[RunDir]:
    """Every run below `root` (hidden directories and links are not entered); a broken one raises naming it."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        if MANIFEST_NAME in files:
            found.append(open_run(Path(directory)))
    return found


def most_recent(runs: list[RunDir]) -> RunDir:
    """Latest by manifest time; ties (the manifest keeps seconds) by the manifest file's mtime, then path."""
    def key(run: RunDir) -> tuple[Any, ...]:
        return _time(run), (run.path / MANIFEST_NAME).stat().st_mtime_ns, str(run.path)

    return max(runs, key=key)


def choose_run(run: str | Path | None = None, cwd: str | Path | None = None) -> Chosen:
    """`run` when given; else the current directory when it is a run; else the most recent run under ./runs."""
    if run is not None:
        return Chosen(Path(run))
    cwd = Path.cwd() if cwd is None else Path(cwd)
    if (cwd / MANIFEST_NAME).exists() or (cwd / MANIFEST_NAME).is_symlink():
        open_run(cwd)
        return Chosen(cwd, "using the run in the current directory; pass RUN to choose another")
    candidates = runs_under(cwd / RUNS_DIR) if (cwd / RUNS_DIR).is_dir() else []
    if not candidates:
        raise EdgeRobustError(NO_RUN)
    latest = most_recent(candidates)
    return Chosen(latest.path, f"using {shown(latest.path, cwd)}, the most recent run; pass RUN to choose another")


def choose_runs(runs: list[Path] | None, cwd: str | Path | None = None) -> tuple[list[Path], str | None]:
    """For commands that take several runs: the ones given, or the one `choose_run` picks."""
    if runs:
        return list(runs), None
    chosen = choose_run(None, cwd)
    return [chosen.path], chosen.note


def bundle_of(run: RunDir) -> Path:
    """The run's most recently exported bundle (`RunDir.latest_bundle`)."""
    return run.latest_bundle()


def choose_bundle(bundle: str | Path | None = None, cwd: str | Path | None = None) -> Chosen:
    """`bundle` when given (a run given instead: its latest bundle); else the current directory when it is a bundle;
    else the bundle of the run chosen."""
    if bundle is not None:
        bundle = Path(bundle)
        if (bundle / MANIFEST_NAME).is_file() and not (bundle / BUNDLE_MANIFEST).exists():
            path = bundle_of(open_run(bundle))
            return Chosen(path, f"using {path}, the latest bundle of run {bundle}; pass BUNDLE to choose another")
        return Chosen(bundle)
    cwd = Path.cwd() if cwd is None else Path(cwd)
    if (cwd / BUNDLE_MANIFEST).exists() or (cwd / BUNDLE_MANIFEST).is_symlink():
        return Chosen(cwd, "using the bundle in the current directory; pass BUNDLE to choose another")
    chosen = choose_run(None, cwd)
    path = bundle_of(open_run(chosen.path))
    which = ("the run in the current directory" if chosen.path == cwd
             else f"the most recent run, {shown(chosen.path, cwd)}")
    return Chosen(path, f"using {shown(path, cwd)}, the bundle of {which}; pass BUNDLE to choose another")
