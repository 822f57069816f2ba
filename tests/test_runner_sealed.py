"""Property: whatever paths a hostile manifest names and whatever links the tree holds, the runner reads, loads or
runs nothing outside its bundle (issue "A bundle is sealed", the runner's independent check)."""
import os
import shutil
import sys

import onnxruntime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runner_helpers import reseal, run_runner

OPENED = []
_RECORDING = [False]


def _audit(event, args):
    if _RECORDING[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # permanent, but records only inside `recording()`

PARTS = ["..", ".", "", "model.onnx", "outside", "sub", "link", "/etc", "golden_inputs.npy"]
FIELDS = ["models.fp32.file", "models.fp16.file", "golden.inputs", "replay.pgd-0.1.file", "runner.files",
          "calibration_file"]
TREES = ["plain", "dir-link", "file-link", "hard-link", "fifo"]


def set_field(manifest, field, name):
    if field == "runner.files":
        manifest["runner"]["files"].append(name)
    elif field == "calibration_file":
        manifest["models"]["fp16"]["calibration_file"] = name
    else:
        *path, last = field.split(".") if not field.startswith("replay") else ["replay", "pgd-0.1", "file"]
        target = manifest
        for key in path:
            target = target[key]
        target[last] = name


def ignorable(path):
    """Python's own imports (modules, extensions) and the interpreter's files are not bundle reads."""
    real = os.path.realpath(path)
    return real.endswith((".py", ".pyc", ".so")) or any(
        real.startswith(os.path.realpath(p) + os.sep) for p in {sys.prefix, sys.base_prefix})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(PARTS), min_size=1, max_size=4), field=st.sampled_from(FIELDS),
       tree=st.sampled_from(TREES), command=st.sampled_from(["verify", "replay", "smooth"]))
def test_nothing_outside_the_bundle_is_read(runner_bundle, tmp_path_factory, monkeypatch, parts, field, tree,
                                            command):
    root = tmp_path_factory.mktemp("sealed")
    outside = root / "outside"
    outside.mkdir()
    for name in ("model.onnx", "golden_inputs.npy"):  # sentinels: usable files whose use would pass unnoticed
        shutil.copyfile(runner_bundle / name, outside / name)
    bundle = root / "bundle"
    shutil.copytree(runner_bundle, bundle)
    if tree == "dir-link":
        os.symlink(outside, bundle / "link")
    elif tree == "file-link":
        os.symlink(outside / "model.onnx", bundle / "link")
    elif tree == "hard-link":
        os.link(outside / "model.onnx", bundle / "link")
    elif tree == "fifo":
        os.mkfifo(bundle / "link")
    reseal(bundle, lambda m: set_field(m, field, "/".join(parts)))

    loaded = []
    real_session = onnxruntime.InferenceSession

    def recording_session(path, *args, **kwargs):
        loaded.append(os.fsdecode(path))
        return real_session(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording_session)
    argv = {"verify": ["verify"], "replay": ["replay", "--no-points"],
            "smooth": ["smooth", "--sigma", "0.1", "--n", "2", "--count", "1"]}[command]
    del OPENED[:]
    _RECORDING[0] = True
    try:
        code, doc = run_runner(*argv, "--bundle", bundle)
    finally:
        _RECORDING[0] = False
    inside = os.path.realpath(bundle) + os.sep
    escaped = [p for p in OPENED + loaded if not ignorable(p) and not os.path.realpath(p).startswith(inside)]
    assert escaped == [], (doc, escaped)
    if tree != "plain":
        assert code == 2 and doc["error"]["kind"] == "unsafe_path", doc
    monkeypatch.undo()
