"""A sealed bundle: every path its manifest names is a plain relative name inside it, and it holds nothing but
directories and regular files with one name each (no symbolic or hard links, device files, FIFOs or sockets).

`check_bundle` runs before anything in a bundle is hashed, loaded or run, on every host reader (`verify`, `bench` on
an exported run, the pipeline) and on what `export` is about to publish. The rule is the device runner's own
(edgerobust/runner/sealed.py: `seal`, the path-key table, the lexical name rule): host and device run the same code,
so they refuse the same bundles with the same words; here its refusals become `SealError`s. It looks at the tree with
`lstat` only, so it never follows a link, never opens a FIFO and reads no file but manifest.json (and that only once
the tree is clean).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import EdgeRobustError
from ..runner import sealed as rule
from ..runner.errors import RunnerError
from ..runner.sealed import DIRECTORY_KEYS, MANIFEST_NAME, PATH_KEYS, PATH_SUFFIXES, PATH_TABLES, is_directory_key

__all__ = ["DIRECTORY_KEYS", "MANIFEST_NAME", "PATH_KEYS", "PATH_SUFFIXES", "PATH_TABLES", "BundleError", "SealError",
           "Sealed", "check_bundle", "check_name", "declared_paths", "is_directory_key", "scan_tree"]


class BundleError(EdgeRobustError):
    """A bundle that is missing, incomplete or has been changed since it was written."""


class SealError(BundleError):
    """A bundle that could reach outside itself: an escaping path, a link, or a special file. `kind` is the runner's
    error kind for the same refusal (unsafe_path, bundle_missing, bundle_invalid, bundle_modified)."""

    def __init__(self, message: str, kind: str = "unsafe_path"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Sealed:
    """What `check_bundle` vouches for: the manifest and every regular file (relative posix names, sorted)."""

    bundle: Path
    manifest: dict[str, Any]
    files: list[str]


def _sealing(call, *args):
    try:
        return call(*args)
    except RunnerError as exc:
        raise SealError(exc.message, exc.kind) from None


def declared_paths(manifest: Any) -> Iterator[tuple[str, str, Any]]:
    """(where, key, value) for every manifest field declared a path; `where` is a location like models.fp32.file."""
    yield from rule.declared_paths(manifest)


def check_name(name: Any, where: str) -> PurePosixPath:
    """A plain relative posix name: no absolute path or drive, no '..' or '.', no empty part, no backslash or NUL."""
    return PurePosixPath(_sealing(rule.check_name, name, where))


def _kind(mode: int) -> str:
    return rule.kind_of(mode)


def scan_tree(root: str | Path) -> list[str]:
    """Every regular file under `root` (relative posix names, sorted); a link, hard link or special file anywhere, or
    a root that is a link, is an error."""
    _sealing(rule.check_root, str(root))
    return _sealing(rule.walk_tree, str(root))


def check_bundle(bundle: str | Path) -> Sealed:
    """The one check every host reader runs first: a clean tree, then a manifest naming only files inside it."""
    bundle = Path(bundle)
    manifest, _, files = _sealing(rule.seal, str(bundle))
    return Sealed(bundle, manifest, files)
