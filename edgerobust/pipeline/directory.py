"""The pipeline's output directory, claimed with a marker of its own.

The pipeline writes only into a directory it made or found empty; it then leaves a marker listing every entry it
created. A re-run removes exactly those entries and nothing else, so a user's own files in the directory (or a
directory the pipeline never claimed) are never deleted.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..claim import LOCK_NAME
from ..errors import EdgeRobustError
from ..io import read_json, write_json

MARKER_NAME = ".edgerobust-pipeline.json"
MARKER_FORMAT = "edgerobust-pipeline-dir-1"
_OWN = {MARKER_NAME, LOCK_NAME}


def _entries(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()} - _OWN if out.is_dir() else set()


def read_marker(out: Path) -> dict | None:
    """The marker of a directory the pipeline claimed, or None."""
    path = out / MARKER_NAME
    if not path.is_file():
        return None
    marker = read_json(path)
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT or \
            not isinstance(marker.get("created"), list) or not all(isinstance(n, str) for n in marker["created"]):
        raise EdgeRobustError(f"{path} is not an edgerobust pipeline marker; choose another --out")
    return marker


def check_claimable(out: Path) -> None:
    """Fail (before any work) unless `out` is missing, empty, or claimed by an earlier pipeline."""
    if out.exists() and not out.is_dir():
        raise EdgeRobustError(f"{out} exists and is not a directory; choose another --out")
    if _entries(out) and read_marker(out) is None:
        raise EdgeRobustError(f"{out} is not empty and was not written by `edgerobust pipeline`; choose another "
                              "--out (the pipeline only replaces its own earlier output)")


def made_by_pipeline(out: Path, name: str) -> bool:
    marker = read_marker(out)
    return marker is not None and name in marker["created"]


class Claim:
    """A claimed directory: `clean` removes the earlier pipeline's entries, `record` lists the new ones."""

    def __init__(self, out: Path):
        self.out = out
        check_claimable(out)
        marker = read_marker(out)
        self.previous = [n for n in (marker or {}).get("created", []) if "/" not in n and n not in ("", ".", "..")]
        self.kept = _entries(out) - set(self.previous)  # the user's entries

    def clean(self) -> None:
        for name in self.previous:
            path = self.out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        self.kept = _entries(self.out)  # what is left is the user's
        self.record()

    def record(self) -> None:
        created = sorted(_entries(self.out) - self.kept)
        if not created and not self.kept:  # nothing made (a failed first step): leave the directory empty
            (self.out / MARKER_NAME).unlink(missing_ok=True)
            return
        write_json(self.out / MARKER_NAME, {"format": MARKER_FORMAT, "created": created})
