"""One seal rule: the host's checker (export/seal.py) and the runner's (runner/sealed.py) give the same verdict, with
the same error kind, on hypothesis-generated hostile manifests and trees; the three disagreements issue 27 found
(hard-linked model.onnx, a symlinked bundle root, a `*_dir` key naming a directory) are decided once."""
from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerobust.export.seal import SealError, check_bundle
from edgerobust.runner.errors import RunnerError
from edgerobust.runner.sealed import BUNDLE_FORMAT, open_bundle


def host_verdict(bundle: Path) -> str:
    try:
        check_bundle(bundle)
    except SealError as exc:
        return exc.kind
    return "ok"


def runner_verdict(bundle: Path) -> str:
    try:
        open_bundle(str(bundle))
    except RunnerError as exc:
        return exc.kind
    return "ok"


def make_bundle(root: Path) -> Path:
    bundle = root / "bundle"
    (bundle / "sub" / "deeper").mkdir(parents=True)
    (bundle / "empty").mkdir()
    for name in ("model.onnx", "golden_inputs.npy", "sub/notes.json", "sub/deeper/x.bin"):
        (bundle / name).write_bytes(name.encode())
    (root / "outside").mkdir()
    (root / "outside" / "model.onnx").write_bytes(b"model.onnx")
    return bundle


def write_manifest(bundle: Path, fields: dict) -> None:
    files = {name: {"sha256": "0" * 64, "bytes": 1} for name in ("model.onnx", "golden_inputs.npy", "sub/notes.json")}
    manifest = {"format": BUNDLE_FORMAT, "models": {"fp32": {"file": "model.onnx"}},
                "golden": {"inputs": "golden_inputs.npy", "count": 1}, "files": files}
    for key, value in fields.items():
        if key == "files":
            manifest["files"][value] = {"sha256": "0" * 64}
        else:
            manifest.setdefault("extra", {})[key] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))


# Names a manifest may give, hostile or not, and keys that declare them (file keys, directory keys, non-path keys).
NAMES = ["model.onnx", "sub", "sub/notes.json", "sub/deeper", "empty", "missing.bin", "../outside/model.onnx",
         "/etc/hostname", "sub/../model.onnx", "./model.onnx", "sub//notes.json", "", "sub\\notes.json", "~/x",
         "link", "link/model.onnx", "hard.onnx", "pipe", 7, None, ["model.onnx", "sub"]]
KEYS = ["file", "inputs", "masks_file", "dir", "runner", "sets_dir", "cache_dir", "note", "files", "engine"]
TREE = ["none", "file-link", "dir-link", "hard-link", "hard-link-model", "fifo", "socket", "linked-root",
        "manifest-link", "manifest-hard-link", "link-inside"]


def apply_tree(root: Path, bundle: Path, kind: str) -> Path:
    """Changes the tree; returns the path the checkers are given (the link, for a linked root)."""
    outside = root / "outside"
    if kind == "file-link":
        (bundle / "link").symlink_to(outside / "model.onnx")
    elif kind == "dir-link":
        (bundle / "link").symlink_to(outside, target_is_directory=True)
    elif kind == "hard-link":
        os.link(outside / "model.onnx", bundle / "hard.onnx")
    elif kind == "hard-link-model":  # the case the host used to accept
        (bundle / "model.onnx").unlink()
        os.link(outside / "model.onnx", bundle / "model.onnx")
    elif kind == "fifo":
        os.mkfifo(bundle / "pipe")
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(bundle / "pipe"))
    elif kind == "linked-root":  # the case the runner used to accept
        (root / "alias").symlink_to(bundle, target_is_directory=True)
        return root / "alias"
    elif kind == "manifest-link":
        (bundle / "manifest.json").rename(outside / "manifest.json")
        (bundle / "manifest.json").symlink_to(outside / "manifest.json")
    elif kind == "manifest-hard-link":
        os.link(bundle / "manifest.json", outside / "manifest.json")
    elif kind == "link-inside":
        (bundle / "sub" / "link").symlink_to(bundle / "model.onnx")
    return bundle


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.dictionaries(st.sampled_from(KEYS), st.sampled_from(NAMES), max_size=3),
       tree=st.sampled_from(TREE))
def test_host_and_runner_give_the_same_verdict(fields, tree):
    with tempfile.TemporaryDirectory(prefix="seal-agree-") as tmp:
        root = Path(tmp)
        bundle = make_bundle(root)
        if fields.get("files") is not None and not isinstance(fields["files"], str):
            fields["files"] = "model.onnx"  # a file table's keys are strings in JSON
        write_manifest(bundle, fields)
        given_path = apply_tree(root, bundle, tree)
        host, runner = host_verdict(given_path), runner_verdict(given_path)
        assert host == runner, (fields, tree, host, runner)
        if tree not in ("none",):
            assert host != "ok", (fields, tree)  # every tree change above is a link or a special file


@pytest.mark.parametrize("tree", ["hard-link-model", "linked-root"])
def test_issue_27_disagreements_are_refused_by_both(tmp_path, tree):
    bundle = make_bundle(tmp_path)
    write_manifest(bundle, {})
    given_path = apply_tree(tmp_path, bundle, tree)
    assert host_verdict(given_path) == runner_verdict(given_path) == "unsafe_path"


def test_a_dir_suffix_key_may_name_a_directory_on_both_sides_and_nothing_else(tmp_path):
    bundle = make_bundle(tmp_path)
    write_manifest(bundle, {"sets_dir": "sub"})
    assert host_verdict(bundle) == runner_verdict(bundle) == "ok"
    write_manifest(bundle, {"masks_file": "sub"})
    assert host_verdict(bundle) == runner_verdict(bundle) == "unsafe_path"
    write_manifest(bundle, {"sets_dir": "../outside"})
    assert host_verdict(bundle) == runner_verdict(bundle) == "unsafe_path"
