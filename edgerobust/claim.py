"""Claiming an output directory: checked before any work, created only when needed, used by one command at a time.

A directory in use holds an exclusive lock file (`fcntl.flock`, so the kernel releases it when its owner dies and a
killed command never leaves a stale lock) with the owner's pid, so a second command writing the same directory gets
one line instead of silently overwriting the first one's files. A command that fails removes the directory it
created if it is still empty, so a failed command leaves no empty --out behind.
Hand-written because the lock must be re-entrant within a process (pipeline -> compress -> train) and tied to
directory creation; `fcntl` is the standard library's POSIX lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import EdgeRobustError

LOCK_NAME = ".edgerobust.lock"
_held: dict[str, list] = {}  # resolved directory -> [fd, depth]: re-entrant within one process


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def check_output(path: str | Path, option: str = "--out") -> None:
    """Fail before any work when `path` cannot become a directory we can write: not a directory, an unwritable or
    missing-and-uncreatable ancestor, or a name too long for the file system."""
    path = Path(path)
    for part in path.parts:  # first: the file system refuses even to look such a name up
        if len(os.fsencode(part)) > 255:
            raise EdgeRobustError(f"the name '{part[:40]}…' in {option} is longer than the file system allows "
                                  "(255 bytes); choose a shorter name")
    if path.exists() and not path.is_dir():
        raise EdgeRobustError(f"{path} exists and is not a directory; choose another {option}")
    ancestor = path if path.exists() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise EdgeRobustError(f"cannot write {path}: {ancestor} is not a directory; choose another {option}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise EdgeRobustError(f"cannot write {path}: {ancestor} is not writable; choose another {option}")


def _make_dirs(path: Path, option: str) -> list[Path]:
    """Create `path` and missing parents; return the directories created (outermost first)."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "the name is too long" if exc.errno == errno.ENAMETOOLONG else exc.strerror
        raise EdgeRobustError(f"cannot create {path}: {reason}; choose another {option}") from None
    return list(reversed(missing))


def _acquire(directory: Path, what: str) -> int:
    lock = directory / LOCK_NAME
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EdgeRobustError(f"cannot lock {directory}: {exc.strerror}; choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EdgeRobustError(f"{directory} is in use by another edgerobust command (pid {owner}); wait for it "
                                  f"to finish or choose another {what}") from None
        try:  # the file may have been removed by its previous owner after we opened it: lock the current one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _release(directory: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / LOCK_NAME).unlink()
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _worker_rank() -> bool:
    """A torchrun rank other than 0."""
    rank = os.environ.get("RANK", "0")
    return os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1") and rank.isdigit() and int(rank) != 0


@contextlib.contextmanager
def locked(directory: str | Path, option: str = "--out") -> Iterator[Path]:
    """Hold `directory` (created if missing) exclusively for the block; re-entrant within this process.

    On an exception the directories this call created are removed again if they are still empty."""
    directory = Path(directory)
    check_output(directory, option)
    if _worker_rank():  # under torchrun rank 0 alone writes (and locks); the other ranks only read
        yield directory
        return
    created = _make_dirs(directory, option)
    key = str(directory.resolve())
    try:
        if key in _held:
            _held[key][1] += 1
            try:
                yield directory
            finally:
                _held[key][1] -= 1
            return
        fd = _acquire(directory, option)
        _held[key] = [fd, 1]
        try:
            yield directory
        finally:
            del _held[key]
            _release(directory, fd)
    except BaseException:
        for path in reversed(created):  # innermost first; stop at the first one that is not empty
            try:
                path.rmdir()
            except OSError:
                break
        raise
