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
    """An uncompressed tar of `names` (regular files under `directory`), with no owners, times or modes of ours.

    Each file is opened once, component by component without following links (`O_NOFOLLOW` under the directory's
    descriptor), checked to be a regular file on that descriptor, and read from it: a file swapped for a link (or a
    directory on its path swapped for one) after `regular_files` looked is refused, never followed.
    """
    buffer = io.BytesIO()
    root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                fd = _open_beneath(root, name, directory)
                with os.fdopen(fd, "rb") as handle:
                    info = tarfile.TarInfo(name)
                    info.size = os.fstat(fd).st_size
                    info.mode = 0o644
                    tar.addfile(info, handle)
    finally:
        os.close(root)
    return buffer.getvalue()


def _open_beneath(root: int, name: str, directory: str | os.PathLike) -> int:
    """A read descriptor of the regular file `name` under the directory descriptor `root`, following no link."""
    parts = name.split("/")
    here = root
    try:
        for part in parts[:-1]:
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=here)
            if here != root:
                os.close(here)
            here = step
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=here)
    except OSError as exc:
        raise TransferError(f"{directory}: '{name}' changed while it was being sent (it is now a link or gone: "
                            f"{exc.strerror}); re-export the bundle") from None
    finally:
        if here != root:
            os.close(here)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TransferError(f"{directory}: '{name}' changed while it was being sent (no longer a regular file); "
                            "re-export the bundle")
    return fd


def tree_sha256(directory: str | os.PathLike, names: list[str]) -> str:
    """One hash over names and contents: the device keeps a copy under it and we skip sending it twice."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + Path(directory, name).read_bytes() + b"\0")
    return digest.hexdigest()
