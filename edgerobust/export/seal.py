"""A sealed bundle: every path its manifest names is a plain relative name inside it, and it holds nothing but
regular files and directories (no links, device files, FIFOs or sockets).

`check_bundle` runs before anything in a bundle is hashed, loaded or run, on every host reader (`verify`, `bench` on
an exported run, the pipeline) and on what `export` is about to publish. It looks at the tree with `lstat` only, so
it never follows a link, never opens a FIFO and reads no file but manifest.json (and that only once the tree is
clean). The device runner checks bundles again with its own code; it does not trust this one.

Which manifest fields are paths is declared here by key (`PATH_KEYS`, `PATH_SUFFIXES`, `PATH_TABLES`), wherever the
key sits in the manifest, so a section added later (replay sets, the runner) is checked without a new rule as long
as it names its files with these keys.
"""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import EdgeRobustError

MANIFEST_NAME = "manifest.json"

# A string (or list of strings) held under one of these keys, at any depth, names a file or directory in the bundle.
PATH_KEYS = frozenset({"file", "files", "path", "paths", "dir", "directory", "runner", "entry", "script", "inputs",
                       "outputs", "labels", "masks", "engine", "calibration"})
PATH_SUFFIXES = ("_file", "_files", "_path", "_paths", "_dir")
# Of those, the keys that may name a directory; every other path must name a regular file.
DIRECTORY_KEYS = frozenset({"dir", "directory", "runner"})
# A mapping held under one of these keys has paths as its keys (the manifest's file table).
PATH_TABLES = frozenset({"files"})


class BundleError(EdgeRobustError):
    """A bundle that is missing, incomplete or has been changed since it was written."""


class SealError(BundleError):
    """A bundle that could reach outside itself: an escaping path, a link, or a special file."""


@dataclass(frozen=True)
class Sealed:
    """What `check_bundle` vouches for: the manifest and every regular file (relative posix names, sorted)."""

    bundle: Path
    manifest: dict[str, Any]
    files: list[str]


def declared_paths(manifest: Any) -> Iterator[tuple[str, str, Any]]:
    """(where, key, value) for every manifest field declared a path; `where` is a location like models.fp32.file.

    Strings under a path key are paths (lists of them too); numbers, booleans and null there are counts or absent
    entries and are skipped; a mapping under a path key is walked by its own keys, except a file table (`files`),
    whose keys are the paths.
    """

    def walk(node: Any, key: str, where: str) -> Iterator[tuple[str, str, Any]]:
        is_path = _is_path_key(key)
        if isinstance(node, dict):
            for child, value in node.items():
                here = f"{where}.{child}" if where else str(child)
                if key in PATH_TABLES:
                    yield f"{where}[{child!r}]", key, child
                yield from walk(value, str(child), here)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, key, f"{where}[{i}]")
        elif is_path and node is not None and not isinstance(node, (bool, int, float)):
            yield where, key, node

    yield from walk(manifest, "", "")


def _is_path_key(key: str) -> bool:
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


def check_name(name: Any, where: str) -> PurePosixPath:
    """A plain relative posix name: no absolute path or drive, no '..' or '.', no empty part, no backslash or NUL."""
    if not isinstance(name, str):
        raise SealError(f"{where} must be a file name, not {type(name).__name__} ({name!r})")
    problem = None
    if not name:
        problem = "is empty"
    elif "\x00" in name:
        problem = "contains a NUL byte"
    elif name.startswith(("/", "~")) or (len(name) > 1 and name[1] == ":"):
        problem = "is an absolute path; a bundle names its files relative to itself"
    elif "\\" in name:
        problem = "contains a backslash; use '/' between directories"
    else:
        parts = name.split("/")
        if ".." in parts:
            problem = "climbs out of the bundle ('..')"
        elif "" in parts or "." in parts:
            problem = "is not a plain relative name (empty or '.' component)"
    if problem:
        raise SealError(f"{where} {name!r} {problem}")
    return PurePosixPath(name)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file or directory"


def scan_tree(root: str | Path) -> list[str]:
    """Every regular file under `root` (relative posix names, sorted); a link or special file anywhere is an error.

    Uses lstat only (os.scandir without following links), so a link to a directory is reported, never walked.
    """
    root = Path(root)
    try:
        mode = os.lstat(root).st_mode
    except FileNotFoundError:
        raise SealError(f"bundle {root} does not exist; create it with `edgerobust export`") from None
    if stat.S_ISLNK(mode):
        raise SealError(f"bundle {root} is a symbolic link; pass the directory itself")
    if not stat.S_ISDIR(mode):
        raise SealError(f"bundle {root} is not a directory")
    files: list[str] = []
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                name = f"{prefix}{entry.name}"
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    pending.append((Path(entry.path), f"{name}/"))
                elif stat.S_ISREG(mode):
                    files.append(name)
                else:
                    target = " (to a directory)" if stat.S_ISLNK(mode) and os.path.isdir(entry.path) else ""
                    raise SealError(f"bundle {root}: {name} is {_kind(mode)}{target}; a bundle holds only regular "
                                    "files and directories (re-export it)")
    return sorted(files)


def check_entry(bundle: Path, name: PurePosixPath, where: str, regular: set[str], directory: bool = False) -> None:
    """`name` (already a plain relative name) is a regular file of the scanned tree (or, if allowed, a directory)."""
    text = str(name)
    is_dir = any(f.startswith(text + "/") for f in regular)
    if text not in regular and not is_dir:
        raise SealError(f"bundle {bundle}: {text} is missing (named by {where}); re-export the bundle")
    if is_dir and not directory:
        raise SealError(f"bundle {bundle}: {where} {text!r} is a directory, not a file; re-export the bundle")
    real_root = os.path.realpath(bundle)
    real = os.path.realpath(bundle / text)
    if os.path.commonpath([real_root, real]) != real_root:  # unreachable after scan_tree; kept as a second lock
        raise SealError(f"bundle {bundle}: {where} {text!r} resolves outside the bundle")


def check_manifest_paths(bundle: Path, manifest: Any, files: list[str]) -> None:
    """Every declared path of the manifest: a plain relative name of a file (or directory) that the tree holds."""
    regular = set(files)
    for where, key, value in declared_paths(manifest):
        name = check_name(value, f"bundle {bundle}: {where}")
        check_entry(bundle, name, where, regular, directory=key in DIRECTORY_KEYS or key.endswith("_dir"))


def read_manifest_file(bundle: Path) -> Any:
    """manifest.json as parsed JSON (called only after `scan_tree` proved it is a regular file)."""
    path = bundle / MANIFEST_NAME
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        raise SealError(f"{bundle} is not a bundle (no {MANIFEST_NAME})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SealError(f"{path} is not valid JSON ({type(exc).__name__}); re-export the bundle") from None
    except RecursionError:
        raise SealError(f"{path} is nested too deeply to be a bundle manifest; re-export the bundle") from None


def check_bundle(bundle: str | Path) -> Sealed:
    """The one check every host reader runs first: a clean tree, then a manifest naming only files inside it."""
    bundle = Path(bundle)
    files = scan_tree(bundle)
    if MANIFEST_NAME not in files:
        raise SealError(f"{bundle} is not a bundle (no {MANIFEST_NAME}); create it with `edgerobust export`")
    manifest = read_manifest_file(bundle)
    if not isinstance(manifest, dict):
        raise SealError(f"{bundle / MANIFEST_NAME} is not an edgerobust bundle manifest")
    try:
        check_manifest_paths(bundle, manifest, files)
    except RecursionError:
        raise SealError(f"{bundle / MANIFEST_NAME} is nested too deeply to be a bundle manifest; "
                        "re-export the bundle") from None
    return Sealed(bundle, manifest, files)
