"""The runner keeps its promise: Python 3.6 syntax, only stdlib + numpy + a runtime, and it runs in a virtual
environment that holds nothing but numpy and onnxruntime (no torch, no edgerobust)."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runner_helpers import RUNNER_DIR, run_program

RUNNER_FILES = sorted(RUNNER_DIR.glob("*.py"))
ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "tensorrt"}


@pytest.mark.parametrize("path", RUNNER_FILES, ids=lambda p: p.name)
def test_every_runner_file_is_python_3_6(path):
    source = path.read_text()
    tree = ast.parse(source, filename=str(path), feature_version=(3, 6))
    for node in ast.walk(tree):
        assert not isinstance(node, ast.NamedExpr), f"{path.name}:{node.lineno}: walrus"
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            assert all(a.name != "annotations" for a in node.names), f"{path.name}: from __future__ import annotations"
        if isinstance(node, ast.FunctionDef):
            args = node.args
            assert not args.posonlyargs, f"{path.name}:{node.lineno}: positional-only parameters"
            assert node.returns is None and all(a.annotation is None for a in args.args + args.kwonlyargs), \
                f"{path.name}:{node.lineno}: annotations (list[str] etc. fail at run time on 3.6)"
        if isinstance(node, ast.JoinedStr):  # f"{x=}" (3.8) parses to a literal "x=" before the value
            text = ast.get_source_segment(source, node) or ""
            assert "=}" not in text and "=!" not in text and "=:" not in text, f"{path.name}:{node.lineno}: f-string ="


def test_vermin_says_3_6(tmp_path):
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    done = subprocess.run([vermin, "--no-tips", "--violations", "-t=3.6-", "--eval-annotations",
                           *map(str, RUNNER_FILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", RUNNER_FILES, ids=lambda p: p.name)
def test_imports_only_stdlib_numpy_and_runtimes(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside the runner package
                continue
            names = [node.module.split(".")[0]]
        else:
            continue
        for name in names:
            assert name in sys.stdlib_module_names or name in ALLOWED_THIRD_PARTY, f"{path.name} imports {name}"


def test_run_py_is_parseable_by_old_pythons():
    """run.py must reach its python_too_old answer: no f-strings, no keyword-only syntax, no annotations."""
    tree = ast.parse((RUNNER_DIR / "run.py").read_text(), feature_version=(3, 4))
    assert not any(isinstance(n, ast.JoinedStr) for n in ast.walk(tree))


def test_the_runner_in_a_torch_free_environment(torch_free_python, runner_bundle, tmp_path):
    """Every command, from a bundle unpacked by the runner itself, under a Python with only numpy + onnxruntime."""
    probe = subprocess.run([str(torch_free_python), "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0  # no torch there
    probe = subprocess.run([str(torch_free_python), "-c", "import edgerobust"], capture_output=True, cwd=tmp_path)
    assert probe.returncode != 0  # nor edgerobust
    import tarfile

    archive = tmp_path / "bundle.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(runner_bundle, arcname=".")
    staged = tmp_path / "staged"  # the runner of the source bundle unpacks the archive into the device directory
    code, doc = run_program(torch_free_python, runner_bundle, "unpack", "--archive", archive, "--dest", staged)
    assert code == 0, doc
    results = {}
    for argv in (["info"], ["verify"], ["bench", "--repeats", "5", "--warmup", "1"], ["replay"],
                 ["smooth", "--sigma", "0.25", "--n", "20", "--count", "2"]):
        code, doc = run_program(torch_free_python, staged, *argv)
        assert code == 0 and doc["ok"], doc
        results[argv[0]] = doc["result"]
    assert results["info"]["packages"]["onnxruntime"] and results["verify"]["golden"]["fp16"]["ok"]
    assert results["replay"]["sets"]["clean"]["count"] == 32
    assert sum(results["smooth"]["points"][0]["counts"]) == 20
    code, doc = run_program(torch_free_python, staged, "bench", "--runtime", "tensorrt")
    assert code == 2 and doc["error"]["kind"] == "runtime_missing" and "tensorrt" in doc["error"]["message"]
