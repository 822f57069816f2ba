"""What travels to a device: a tar archive of regular files only, built in memory with fixed metadata.

Links, devices, FIFOs and sockets are refused by name before anything is sent (issue 16: a bundle is sealed); the
device unpacks bundles with the runner's own `unpack`, which checks every member again and trusts nothing.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

from ..errors import EdgeRobustError

SKIP_DIRS = {"__pycache__"}


class TransferError(EdgeRobustError):
    """Something in a directory to send that is not a regular file or a directory."""


def regular_files(directory: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Sorted `/`-separated relative names of the regular files under `directory`; anything else is refused."""
    root = Path(directory)
    if root.is_symlink() or not root.is_dir():
        raise TransferError(f"{root} is not a directory (a link or a file); give the real directory")
    names = []
    for here, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in (*dirs, *files):
            path = Path(here, name)
            mode = path.lstat().st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise TransferError(f"{root}: '{rel}' is a link; only regular files are sent to a device "
                                    "(re-export the bundle)")
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise TransferError(f"{root}: '{rel}' is not a regular file (a device, FIFO or socket); "
                                    "only regular files are sent")
            if stat.S_ISREG(mode) and (suffixes is None or rel.endswith(suffixes)):
                names.append(rel)
    return sorted(names)


def pack(directory: str | os.PathLike, names: list[str]) -> bytes:
    """An uncompressed tar of `names` (regular files under `directory`), with no owners, times or modes of ours."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            path = Path(directory, name)
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def tree_sha256(directory: str | os.PathLike, names: list[str]) -> str:
    """One hash over names and contents: the device keeps a copy under it and we skip sending it twice."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + Path(directory, name).read_bytes() + b"\0")
    return digest.hexdigest()
