"""`unpack` on crafted tar archives: every member that would land outside the bundle is refused, nothing is left."""
import io
import os
import sys
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runner_helpers import error_kind, run_program, run_runner


def add_file(tar, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar, name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tar.addfile(info)


def archive(tmp_path, build, mode="w"):
    path = tmp_path / "bundle.tar"
    with tarfile.open(path, mode) as tar:
        build(tar)
    return path


def left_behind(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "bundle.tar")


def test_a_real_bundle_round_trips_and_verifies(runner_bundle, tmp_path):
    path = tmp_path / "bundle.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(runner_bundle, arcname=".")
    code, doc = run_runner("unpack", "--archive", path, "--dest", tmp_path / "device" / "b1")
    assert code == 0, doc
    result = doc["result"]
    manifest = (runner_bundle / "manifest.json").read_bytes()
    import hashlib

    assert result["bundle_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert result["files"] == len([p for p in runner_bundle.rglob("*") if p.is_file()])
    code, doc = run_runner("verify", "--bundle", result["dest"], "--no-golden")
    assert code == 0 and doc["result"]["bundle_sha256"] == result["bundle_sha256"]


@pytest.mark.parametrize("build, names", [
    (lambda t: add_file(t, "/etc/evil"), "/etc/evil"),
    (lambda t: add_file(t, "../evil"), "../evil"),
    (lambda t: add_file(t, "a/../../evil"), "a/../../evil"),
    (lambda t: add_file(t, "a//b"), "a//b"),
    (lambda t: add_file(t, "a\\..\\evil"), "backslash"),
    (lambda t: add_special(t, "link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    (lambda t: (add_file(t, "ok"), add_special(t, "hard", tarfile.LNKTYPE, "ok")), "hard link"),
    (lambda t: add_special(t, "tty", tarfile.CHRTYPE), "device, FIFO"),
    (lambda t: add_special(t, "disk", tarfile.BLKTYPE), "device, FIFO"),
    (lambda t: add_special(t, "pipe", tarfile.FIFOTYPE), "device, FIFO"),
    (lambda t: (add_file(t, "a"), add_file(t, "a")), "appears twice"),
    (lambda t: (add_file(t, "a"), add_file(t, "a/b")), "not a directory"),
])
def test_hostile_members_are_refused_and_nothing_is_left(tmp_path, build, names):
    path = archive(tmp_path, build)
    message = error_kind(["unpack", "--archive", path, "--dest", tmp_path / "dest"], "unsafe_path")
    assert names in message
    assert left_behind(tmp_path) == []


def test_a_link_then_a_file_through_it_is_refused_from_stdin(runner_bundle, tmp_path):
    """Streamed archives cannot be pre-scanned: the link is refused when met, and the staging directory removed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        add_file(tar, "fine.txt")
        add_special(tar, "escape", tarfile.SYMTYPE, str(outside))
        add_file(tar, "escape/planted.txt")
    code, doc = run_program(sys.executable, runner_bundle, "unpack", "--archive", "-", "--dest", tmp_path / "d",
                            stdin=data.getvalue())
    assert code == 2 and doc["error"]["kind"] == "unsafe_path"
    assert list(outside.iterdir()) == [] and not (tmp_path / "d").exists()
    assert not any(p.name.startswith("d.partial") for p in tmp_path.iterdir())


def test_size_limit_not_a_tar_and_a_used_destination(tmp_path):
    path = archive(tmp_path, lambda t: add_file(t, "big", b"0" * 1000))
    assert "max-bytes" in error_kind(["unpack", "--archive", path, "--dest", tmp_path / "d", "--max-bytes", 999],
                                     "archive_invalid")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar archive at all" * 50)
    error_kind(["unpack", "--archive", junk, "--dest", tmp_path / "d"], "archive_invalid")
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    error_kind(["unpack", "--archive", path, "--dest", used], "archive_invalid")
    assert (used / "something").read_text() == "x" and not (tmp_path / "d").exists()


def test_modes_are_sanitised(tmp_path):
    def build(tar):
        info = tarfile.TarInfo("tool")
        info.size, info.mode = 1, 0o6777  # setuid + setgid + world-writable
        tar.addfile(info, io.BytesIO(b"x"))
        info = tarfile.TarInfo("dir/data")
        info.size, info.mode = 1, 0o666
        tar.addfile(info, io.BytesIO(b"y"))

    code, doc = run_runner("unpack", "--archive", archive(tmp_path, build), "--dest", tmp_path / "d")
    assert code == 0, doc
    assert os.stat(tmp_path / "d" / "tool").st_mode & 0o7777 == 0o755
    assert os.stat(tmp_path / "d" / "dir" / "data").st_mode & 0o7777 == 0o644


def test_unwritable_parent_is_an_io_error(tmp_path):
    if os.geteuid() == 0:
        parent = tmp_path / "file-not-dir"
        parent.write_text("x")  # root can write anywhere; a file as the parent is unusable for everyone
    else:
        parent = tmp_path / "ro"
        parent.mkdir(mode=0o500)
    path = archive(tmp_path, lambda t: add_file(t, "a"))
    error_kind(["unpack", "--archive", path, "--dest", parent / "d"], "io_error")


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(st.sampled_from(["..", ".", "", "a", "b", "/", "c.d"]), min_size=1, max_size=5))
def test_no_generated_name_lands_outside(tmp_path_factory, parts):
    """Any member name built from these parts is either refused or extracted strictly inside the destination."""
    tmp = tmp_path_factory.mktemp("gen")
    name = "/".join(parts)
    try:
        path = archive(tmp, lambda t: add_file(t, name, b"payload"))
    except (ValueError, OSError):
        return
    dest = tmp / "box" / "dest"
    code, doc = run_runner("unpack", "--archive", path, "--dest", dest)
    outside = [p for p in tmp.rglob("*") if p.is_file() and p.name != "bundle.tar" and dest not in p.parents]
    assert outside == []
    if code == 0:
        assert doc["result"]["files"] in (0, 1)
    else:
        assert doc["error"]["kind"] == "unsafe_path"


def test_stdin_through_the_program(runner_bundle, tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        add_file(tar, "manifest.json", b"{}")
    code, doc = run_program(sys.executable, runner_bundle, "unpack", "--archive", "-", "--dest", tmp_path / "d",
                            stdin=data.getvalue())
    assert code == 0 and doc["result"]["files"] == 1 and (tmp_path / "d" / "manifest.json").read_bytes() == b"{}"


@pytest.mark.parametrize("stdin", [False, True])
def test_an_over_deep_member_is_refused_and_leaves_nothing(runner_bundle, tmp_path, stdin):
    """A member 3,000 directories deep once gave an `internal` RecursionError and left a staging tree 2,000 deep."""
    path = archive(tmp_path, lambda tar: (add_file(tar, "manifest.json"), add_file(tar, "a/" * 3000 + "f")),
                   mode="w:gz")
    if stdin:
        code, doc = run_program(sys.executable, runner_bundle, "unpack", "--archive", "-", "--dest", tmp_path / "d",
                                stdin=path.read_bytes())
    else:
        code, doc = run_runner("unpack", "--archive", path, "--dest", tmp_path / "d")
    assert code == 2 and doc["error"]["kind"] == "unsafe_path", doc
    assert "nested 3000 directories deep" in doc["error"]["message"]
    assert left_behind(tmp_path) == []
