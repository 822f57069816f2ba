"""Unpack a bundle archive on the device, refusing every member that would land outside the bundle directory.

tarfile's own extraction follows links and (before Python 3.12's filters, absent on 3.6) trusts member names, so
members are checked here and written by hand: regular files and directories only, plain relative names, no links
(symbolic or hard), devices or FIFOs, no duplicates, a size limit; all into a staging directory renamed at the end.
"""
import hashlib
import os
import shutil
import sys
import tarfile

from .errors import RunnerError
from .sealed import MANIFEST_NAME, check_name

DEFAULT_MAX_BYTES = 4 << 30
CHUNK = 1 << 20
MAX_PARTS = 16  # directory levels of one member: a bundle nests 3; deeper ones (3,000 once) exhaust paths and rmtree


def member_name(member):
    """The member's checked relative name (a leading './' is accepted and dropped)."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if member.isdir() else name
    if member.isdir() and name in ("", "."):
        return None  # the archive's root directory itself ("tar -C DIR .")
    if name.count("/") >= MAX_PARTS:
        raise RunnerError("unsafe_path", "archive member {}... is nested {} directories deep, more than a bundle's "
                                         "{}".format(name[:60], name.count("/"), MAX_PARTS))
    try:
        return check_name(name, "archive member")
    except RunnerError as exc:
        raise RunnerError("unsafe_path", exc.message) from None


def check_member(member):
    """The member's name, or None for the root directory; RunnerError for anything but files and directories."""
    name = member_name(member)
    if member.issym() or member.islnk():
        raise RunnerError("unsafe_path", "archive member {} is a {} link (to {!r}); a bundle holds regular files "
                                         "only".format(name, "symbolic" if member.issym() else "hard",
                                                       member.linkname))
    if not (member.isfile() or member.isdir()):
        raise RunnerError("unsafe_path", "archive member {} is a device, FIFO or other special file; a bundle holds "
                                         "regular files only".format(name))
    return name


def _open(archive):
    try:
        if archive == "-":
            return tarfile.open(fileobj=sys.stdin.buffer, mode="r|*")
        return tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError) as exc:
        raise RunnerError("archive_invalid", "{} is not a readable tar archive ({})".format(archive, exc)) from None


def unpack(archive, dest, max_bytes=DEFAULT_MAX_BYTES):
    """Extract `archive` (a path or '-' for stdin) into the new or empty directory `dest`."""
    dest = os.path.abspath(dest)
    if os.path.lexists(dest) and (os.path.islink(dest) or not os.path.isdir(dest) or os.listdir(dest)):
        raise RunnerError("archive_invalid", "destination {} exists and is not an empty directory; choose a new "
                                             "one".format(dest))
    parent = os.path.dirname(dest)
    stage = "{}.partial-{}".format(dest, os.getpid())
    try:
        os.makedirs(parent, exist_ok=True)
        if os.path.lexists(stage):
            shutil.rmtree(stage)
        os.mkdir(stage)
    except OSError as exc:
        raise RunnerError("io_error", "cannot create {}: {}".format(stage, exc.strerror)) from None
    try:
        files, total, manifest_sha = _extract(archive, stage, max_bytes)
        if os.path.isdir(dest):
            os.rmdir(dest)
        os.rename(stage, dest)
    except OSError as exc:
        raise RunnerError("io_error", "cannot write {}: {}".format(dest, exc.strerror)) from None
    finally:
        if os.path.lexists(stage):
            shutil.rmtree(stage, ignore_errors=True)
    return {"dest": dest, "files": files, "bytes": total, "bundle_sha256": manifest_sha}


def _extract(archive, stage, max_bytes):
    seen = set()
    files = total = 0
    manifest_sha = None
    with _open(archive) as tar:
        try:
            if archive != "-":  # a file can be checked whole before anything is written
                for member in tar.getmembers():
                    check_member(member)
            for member in tar:
                name = check_member(member)
                if name is None:
                    continue
                if name in seen:
                    raise RunnerError("unsafe_path", "archive member {} appears twice".format(name))
                seen.add(name)
                target = os.path.join(stage, *name.split("/"))
                _make_parents(stage, name)
                if member.isdir():
                    if not os.path.isdir(target):
                        os.mkdir(target, 0o755)
                    continue
                total += member.size
                if total > max_bytes:
                    raise RunnerError("archive_invalid", "the archive holds more than --max-bytes {} bytes".format(
                        max_bytes))
                digest = _write(tar.extractfile(member), target, 0o755 if member.mode & 0o111 else 0o644)
                if name == MANIFEST_NAME:
                    manifest_sha = digest
                files += 1
        except tarfile.TarError as exc:
            raise RunnerError("archive_invalid", "the archive is damaged ({})".format(exc)) from None
    return files, total, manifest_sha


def _make_parents(stage, name):
    """Create the member's parent directories; each must be a real directory (never a file or a link)."""
    path = stage
    for part in name.split("/")[:-1]:
        path = os.path.join(path, part)
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            raise RunnerError("unsafe_path", "archive member {} passes through {}, which is not a directory".format(
                name, part))
        if not os.path.lexists(path):
            os.mkdir(path, 0o755)


def _write(source, target, mode):
    """Write a new regular file (O_EXCL, no following of links); return its sha256."""
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, mode)
    with os.fdopen(fd, "wb") as handle:
        for block in iter(lambda: source.read(CHUNK), b""):
            digest.update(block)
            handle.write(block)
    os.chmod(target, mode)
    return digest.hexdigest()
