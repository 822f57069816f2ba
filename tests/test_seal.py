"""Sealed bundles (issue 16): nothing a bundle names or holds reaches outside it, and the check runs before any read.

Every escape points at a sentinel outside the bundle whose contents equal the bundle's own (so the sha256 table
cannot tell them apart); an audit hook on `open` and a recording onnxruntime session prove that no sentinel is
ever opened, loaded or run, and that nothing in a refused bundle but manifest.json was read.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from cli_helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerobust.config import BenchConfig, ExportConfig
from edgerobust.errors import EdgeRobustError
from edgerobust.export.bundle import BundleError, read_manifest, verify_bundle, write_manifest
from edgerobust.export.seal import SealError, _kind, check_bundle, check_name, declared_paths
from edgerobust.io import sha256_file, write_json

# ---- what was touched ----------------------------------------------------------------------------------------------
_LOG: list[tuple[str, str]] = []  # (event, path) while recording
_RECORDING = [False]
_EXEC_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn")


def _audit(event: str, args: tuple) -> None:
    if not _RECORDING[0]:
        return
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _LOG.append(("open", os.path.abspath(os.fsdecode(args[0]))))
    elif event in _EXEC_EVENTS:
        _LOG.append(("exec", repr(args)[:200]))


sys.addaudithook(_audit)  # cannot be removed; it records only inside `watching()`
_REAL_SESSION = onnxruntime.InferenceSession


def _recording_session(path, *args, **kwargs):
    _LOG.append(("onnxruntime", os.path.abspath(os.fsdecode(path))))
    return _REAL_SESSION(path, *args, **kwargs)


@contextlib.contextmanager
def watching():
    _LOG.clear()
    _RECORDING[0] = True
    onnxruntime.InferenceSession = _recording_session
    try:
        yield _LOG
    finally:
        _RECORDING[0] = False
        onnxruntime.InferenceSession = _REAL_SESSION


def touched(log, root: Path) -> list[tuple[str, str]]:
    real = os.path.realpath(root)
    return [(kind, path) for kind, path in log if kind == "exec" or os.path.realpath(path).startswith(real + os.sep)
            or os.path.realpath(path) == real]


# ---- a small real bundle (an ONNX MatMul, golden arrays from onnxruntime) ------------------------------------------
def tiny_onnx() -> bytes:
    weight = onnx.numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 7, "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["input", "w"], ["logits"])], "tiny",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])], [weight])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def make_bundle(root: Path) -> Path:
    """A bundle as export writes it: models, golden arrays, calibration, a file in a subdirectory, the manifest."""
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(tiny_onnx())
    inputs = np.linspace(0, 1, 8 * 4, dtype=np.float32).reshape(8, 4)
    outputs = _REAL_SESSION(str(root / "model.onnx")).run(None, {"input": inputs})[0]
    np.save(root / "golden_inputs.npy", inputs)
    np.save(root / "golden_outputs.npy", outputs)
    np.save(root / "golden_labels.npy", outputs.argmax(1))
    np.savez(root / "calibration.npz", input=inputs)
    (root / "extra").mkdir()
    write_json(root / "extra" / "notes.json", {"about": "a file in a subdirectory"})
    write_manifest(root, {
        "target": "x86-cpu",
        "models": {"fp32": {"file": "model.onnx", "parity": {"tolerance": 1e-6, "tolerance_kind": "absolute"}}},
        "golden": {"inputs": "golden_inputs.npy", "outputs": "golden_outputs.npy", "labels": "golden_labels.npy",
                   "count": 8},
        "calibration": {"file": "calibration.npz", "count": 8}, "notes_file": "extra/notes.json"})
    return root


def make_outside(root: Path, bundle: Path) -> Path:
    """Sentinels: byte-for-byte copies of the bundle's files, outside it, so only the seal can tell them apart."""
    root.mkdir(parents=True)
    for name in ("model.onnx", "golden_inputs.npy", "golden_outputs.npy", "calibration.npz"):
        shutil.copy(bundle / name, root / name)
    (root / "run.py").write_text(f"open({str(root / 'EXECUTED')!r}, 'w').close()\n")
    return root


_TEMPLATE: list[Path] = []


def fresh(base: Path) -> tuple[Path, Path]:
    """(bundle, outside) under `base`, copied from one template made once per session."""
    if not _TEMPLATE:
        _TEMPLATE.append(make_bundle(Path(tempfile.mkdtemp(prefix="seal-template-")) / "bundle"))
    bundle = base / "bundle"
    shutil.copytree(_TEMPLATE[0], bundle)
    return bundle, make_outside(base / "outside", bundle)


def edit_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def assert_refused_untouched(bundle: Path, outside: Path, names: list[str], golden: bool = True) -> str:
    """verify (with golden) refuses, naming one of `names`; nothing outside and nothing but the manifest was read."""
    with watching() as log, pytest.raises(SealError) as info:
        verify_bundle(bundle, run_golden=golden)
    message = str(info.value)
    assert "\n" not in message and any(name in message for name in names), (message, names)
    assert touched(log, outside) == []
    assert {p for _, p in touched(log, bundle)} <= {os.path.abspath(bundle / "manifest.json")}
    assert not (outside / "EXECUTED").exists()
    return message


# ---- the clean case ------------------------------------------------------------------------------------------------
def test_clean_bundle_is_sealed_and_verifies_with_golden(tmp_path):
    bundle, _ = fresh(tmp_path)
    sealed = check_bundle(bundle)
    assert sealed.files == ["calibration.npz", "extra/notes.json", "golden_inputs.npy", "golden_labels.npy",
                            "golden_outputs.npy", "manifest.json", "model.onnx"]
    where = {w for w, _, _ in declared_paths(sealed.manifest)}
    assert {"models.fp32.file", "golden.inputs", "golden.outputs", "golden.labels", "calibration.file", "notes_file",
            "files['model.onnx']", "files['extra/notes.json']"} <= where
    with watching() as log:
        result = verify_bundle(bundle, run_golden=True)
    assert result["golden"]["fp32"]["max_abs_diff"] == 0.0
    assert ("onnxruntime", os.path.abspath(bundle / "model.onnx")) in log


# ---- the three cases of the issue ----------------------------------------------------------------------------------
@pytest.mark.parametrize("escape", ["../outside/model.onnx", "ABSOLUTE"])
def test_model_outside_the_bundle_is_refused_and_never_run(tmp_path, escape):
    bundle, outside = fresh(tmp_path)
    name = str(outside / "model.onnx") if escape == "ABSOLUTE" else escape
    edit_manifest(bundle, lambda m: m["models"]["fp32"].update(file=name))
    message = assert_refused_untouched(bundle, outside, ["models.fp32.file"])
    assert ("absolute path" if escape == "ABSOLUTE" else "climbs out of the bundle ('..')") in message
    code, out, err = run_cli("verify", bundle, "--golden")
    assert code == 2 and "models.fp32.file" in err and len(err.strip().splitlines()) == 1 and "ok" not in out


def test_link_to_a_file_outside_listed_with_its_hash_is_refused(tmp_path):
    bundle, outside = fresh(tmp_path)
    secret = outside / "hostname"
    secret.write_text("host-secret\n")
    (bundle / "link.txt").symlink_to(secret)
    edit_manifest(bundle, lambda m: m["files"].update({"link.txt": {"sha256": sha256_file(secret), "bytes": 12}}))
    message = assert_refused_untouched(bundle, outside, ["link.txt"])
    assert "link.txt is a symbolic link" in message
    code, _, err = run_cli("verify", bundle)
    assert code == 2 and "link.txt is a symbolic link" in err and len(err.strip().splitlines()) == 1


def test_link_to_a_directory_is_an_error_not_skipped(tmp_path):
    bundle, outside = fresh(tmp_path)
    (bundle / "etc").symlink_to(outside, target_is_directory=True)
    message = assert_refused_untouched(bundle, outside, ["etc"])
    assert "etc is a symbolic link (to a directory)" in message
    code, _, err = run_cli("verify", bundle, "--no-golden")
    assert code == 2 and "etc is a symbolic link" in err


# ---- special files, the bundle root, lexical rules -----------------------------------------------------------------
def test_fifo_and_socket_are_refused_without_being_opened(tmp_path):
    bundle, outside = fresh(tmp_path)
    os.mkfifo(bundle / "extra" / "pipe")
    edit_manifest(bundle, lambda m: m["files"].update({"extra/pipe": {"sha256": "0" * 64, "bytes": 0}}))
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("a FIFO in the bundle was opened"))
    signal.alarm(30)
    try:
        assert "extra/pipe is a FIFO" in assert_refused_untouched(bundle, outside, ["extra/pipe"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    os.unlink(bundle / "extra" / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(bundle / "sock"))
    assert "sock is a socket" in assert_refused_untouched(bundle, outside, ["sock"])


@pytest.mark.parametrize("mode,name", [(stat.S_IFCHR, "a character device"), (stat.S_IFBLK, "a block device"),
                                       (stat.S_IFIFO, "a FIFO"), (stat.S_IFSOCK, "a socket"),
                                       (stat.S_IFLNK, "a symbolic link")])
def test_every_special_kind_is_named(mode, name):
    # device files need privileges to create; the scan reports every non-regular mode through this one function
    assert _kind(mode) == name


def test_bundle_root_that_is_a_link_or_missing(tmp_path):
    bundle, _ = fresh(tmp_path)
    (tmp_path / "alias").symlink_to(bundle, target_is_directory=True)
    with pytest.raises(SealError, match="is a symbolic link; pass the directory itself"):
        verify_bundle(tmp_path / "alias")
    with pytest.raises(BundleError, match="does not exist"):
        read_manifest(tmp_path / "nothing")


@pytest.mark.parametrize("name,problem", [
    ("/etc/passwd", "absolute path"), ("~/model.onnx", "absolute path"), ("C:/model.onnx", "absolute path"),
    ("../model.onnx", "'..'"), ("extra/../../model.onnx", "'..'"), ("./model.onnx", "'.' component"),
    ("extra//notes.json", "empty"), ("", "is empty"), ("extra\\notes.json", "backslash"), ("a\x00b", "NUL"),
])
def test_lexical_rules(name, problem):
    with pytest.raises(SealError, match=problem):
        check_name(name, "models.fp32.file")


def test_declared_path_that_is_not_a_string_or_names_a_directory(tmp_path):
    bundle, outside = fresh(tmp_path)
    edit_manifest(bundle, lambda m: m["golden"].update(inputs=["extra"]))
    assert "is a directory, not a file" in assert_refused_untouched(bundle, outside, ["golden.inputs"])
    edit_manifest(bundle, lambda m: m["golden"].update(inputs={"x": 1}))  # a mapping is walked, not a path
    edit_manifest(bundle, lambda m: m["models"]["fp32"].update(file=7))
    with pytest.raises(BundleError, match="models.fp32 names no model file"):
        verify_bundle(bundle)


def test_sections_added_later_are_checked_by_their_keys(tmp_path):
    bundle, outside = fresh(tmp_path)
    edit_manifest(bundle, lambda m: m.update(replay={"clean": {"file": "../outside/golden_inputs.npy"}}))
    assert "replay.clean.file" in assert_refused_untouched(bundle, outside, ["replay.clean.file"])
    edit_manifest(bundle, lambda m: (m.pop("replay"), m.update(runner=str(outside / "run.py"))))
    assert "runner" in assert_refused_untouched(bundle, outside, ["runner"])


# ---- writers and other readers -------------------------------------------------------------------------------------
def test_export_never_publishes_a_link(digits_run, tmp_path, monkeypatch):
    import edgerobust.export.api as api
    from edgerobust.run import RunDir

    run = RunDir.open(shutil.copytree(digits_run.path, tmp_path / "run"))
    outside = tmp_path / "outside.json"
    outside.write_text("{}")

    def linking_profile(directory, profile):
        (directory / "profile.json").symlink_to(outside)

    monkeypatch.setattr(api, "write_profile", linking_profile)
    with pytest.raises(SealError, match=r"not published: bundle \S*export-x86-cpu: profile.json is a symbolic link"):
        api.export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=4), progress=False)
    assert [p.name for p in run.path.iterdir() if "export" in p.name] == []
    assert "export" not in RunDir.open(run.path).manifest
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked-out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    monkeypatch.undo()
    code, _, err = run_cli("export", run.path, "--out", tmp_path / "linked-out", "-q")
    assert code == 2 and "is a symbolic link" in err and list((tmp_path / "elsewhere").iterdir()) == []


def test_bench_refuses_an_unsealed_bundle_before_any_work(digits_run, tmp_path):
    from edgerobust.bench import bench_run
    from edgerobust.export.api import export_run
    from edgerobust.run import RunDir

    run = RunDir.open(shutil.copytree(digits_run.path, tmp_path / "run"))
    bundle = export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=4), progress=False).bundle
    (bundle / "etc").symlink_to(tmp_path, target_is_directory=True)
    with watching() as log, pytest.raises(SealError, match="etc is a symbolic link"):
        bench_run(run, BenchConfig(target="x86-cpu", runtimes=["ort-cpu"], batches=[1], repeats=5, warmup=1,
                  memory=False), progress=False)
    assert not any(kind == "onnxruntime" for kind, _ in log)
    assert not (run.path / "bench.json").exists()


# ---- property: hostile manifests and trees -------------------------------------------------------------------------
FIELDS = {  # where a path goes -> how to set it
    "models.fp32.file": lambda m, v: m["models"]["fp32"].update(file=v),
    "golden.inputs": lambda m, v: m["golden"].update(inputs=v),
    "golden.outputs": lambda m, v: m["golden"].update(outputs=v),
    "calibration.file": lambda m, v: m["calibration"].update(file=v),
    "runner": lambda m, v: m.update(runner=v),
    "replay.adv.file": lambda m, v: m.setdefault("replay", {}).update(adv={"file": v, "count": 8}),
    "engines[0].path": lambda m, v: m.update(engines=[{"path": v, "precision": "fp16"}]),
    "files": lambda m, v: m["files"].update({v: {"sha256": "0" * 64, "bytes": 1}}),
}
ESCAPES = ["dotdot", "deep-dotdot", "absolute", "link-file", "link-dir-component", "link-inside"]
TREE = ["link-to-outside-file", "link-to-outside-dir", "model-replaced-by-link", "fifo", "socket",
        "nested-link", "link-to-dev-null", "manifest-replaced-by-link"]


def apply_escape(bundle: Path, outside: Path, kind: str, sentinel: str) -> tuple[str, str]:
    """A path value that escapes (or is a link), and the name a refusal must mention besides the field."""
    if kind == "dotdot":
        return f"../outside/{sentinel}", f"../outside/{sentinel}"
    if kind == "deep-dotdot":
        return f"extra/../../outside/{sentinel}", "extra/../../outside"
    if kind == "absolute":
        return str(outside / sentinel), str(outside / sentinel)
    if kind == "link-file":
        link = bundle / f"linked-{sentinel}"
        if not link.is_symlink():
            link.symlink_to(outside / sentinel)
        return link.name, link.name
    if kind == "link-dir-component":
        if not (bundle / "out").is_symlink():
            (bundle / "out").symlink_to(outside, target_is_directory=True)
        return f"out/{sentinel}", "out"
    link = bundle / "extra" / "inner-link"
    if not link.is_symlink():
        link.symlink_to(bundle / "model.onnx")
    return "extra/inner-link", "extra/inner-link"


def apply_tree(bundle: Path, outside: Path, kind: str) -> str:
    if kind == "link-to-outside-file":
        (bundle / "hostname").symlink_to(outside / "golden_inputs.npy")
        return "hostname"
    if kind == "link-to-outside-dir":
        (bundle / "etc").symlink_to(outside, target_is_directory=True)
        return "etc"
    if kind == "model-replaced-by-link":  # same bytes, so the sha256 table still matches
        (bundle / "model.onnx").unlink()
        (bundle / "model.onnx").symlink_to(outside / "model.onnx")
        return "model.onnx"
    if kind == "fifo":
        os.mkfifo(bundle / "extra" / "fifo")
        return "extra/fifo"
    if kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(bundle / "s"))
        return "s"
    if kind == "nested-link":
        (bundle / "extra" / "deeper").mkdir()
        (bundle / "extra" / "deeper" / "up").symlink_to(outside, target_is_directory=True)
        return "extra/deeper/up"
    if kind == "manifest-replaced-by-link":  # the manifest itself is read only once it is known to be a plain file
        return "manifest.json"
    (bundle / "null").symlink_to(os.devnull)
    return "null"


hostile = st.lists(st.one_of(
    st.tuples(st.just("field"), st.sampled_from(sorted(FIELDS)), st.sampled_from(ESCAPES),
              st.sampled_from(["model.onnx", "golden_inputs.npy", "run.py"])),
    st.tuples(st.just("tree"), st.sampled_from(TREE), st.just(""), st.just(""))), min_size=1, max_size=3,
    unique_by=lambda t: t[:2])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, st.booleans())
def test_no_hostile_bundle_reaches_outside(mutations, golden):
    with tempfile.TemporaryDirectory(prefix="seal-") as tmp:
        bundle, outside = fresh(Path(tmp))
        manifest = json.loads((bundle / "manifest.json").read_text())
        names = []
        for what, key, escape, sentinel in mutations:
            if what == "tree":
                names.append(apply_tree(bundle, outside, key))
            else:
                value, name = apply_escape(bundle, outside, escape, sentinel)
                FIELDS[key](manifest, value)
                names += [key, name]
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        if any(key == "manifest-replaced-by-link" for _, key, _, _ in mutations):
            shutil.move(bundle / "manifest.json", outside / "manifest.json")
            (bundle / "manifest.json").symlink_to(outside / "manifest.json")
        previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("something in the bundle was opened"))
        signal.alarm(30)
        try:
            assert_refused_untouched(bundle, outside, names, golden)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.lists(st.sampled_from(["a", "b.onnx", "..", ".", "", "c"]), min_size=1, max_size=5))
def test_an_accepted_name_never_leaves_the_root(absolute, parts):
    name = ("/" if absolute else "") + "/".join(parts)
    root = os.path.abspath("bundle-root")
    try:
        check_name(name, "where")
    except EdgeRobustError:
        assert absolute or any(p in ("..", ".", "") for p in parts)
        return
    joined = os.path.normpath(os.path.join(root, name))
    assert joined.startswith(root + os.sep) and not absolute


def test_a_manifest_nested_too_deeply_is_one_line(tmp_path):
    bundle, outside = fresh(tmp_path)
    (bundle / "manifest.json").write_text('{"files": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(SealError, match="nested too deeply|not valid JSON"):
        verify_bundle(bundle)
