"""Fixtures of the remote harness's test bed: a real OpenSSH server on loopback, a torch-free device Python
(conftest's `torch_free_python`: only numpy and onnxruntime; EDGEROBUST_DEVICE_PYTHON overrides it), device profiles
for this machine as a device, and a run exported for them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from edgerobust.config import ExportConfig
from edgerobust.remote.testbed import LoopbackSSHD


def make_venv_with(path: Path, packages: tuple[str, ...]) -> Path:
    """A virtual environment whose site-packages link only `packages` from this one (no download)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python3*/site-packages"))
    source = Path(numpy.__file__).resolve().parent.parent
    for entry in source.iterdir():
        base = entry.name.split("-")[0]
        if entry.name in packages or base in packages and entry.name.endswith(".dist-info") \
                or entry.name == f"{base}.libs" and base in packages:
            (site / entry.name).symlink_to(entry)
    python = path / "bin" / "python"
    probe = subprocess.run([str(python), "-c", f"import {', '.join(packages)}"], capture_output=True, text=True,
                           env={"PATH": os.environ["PATH"]})
    assert probe.returncode == 0, probe.stderr
    return python


@pytest.fixture(scope="session")
def device_python(torch_free_python) -> str:
    """The device's interpreter: conftest's virtual environment with only numpy and onnxruntime (no torch)."""
    return os.environ.get("EDGEROBUST_DEVICE_PYTHON") or str(torch_free_python)


@pytest.fixture(scope="session")
def ssh_bed(tmp_path_factory):
    with LoopbackSSHD(tmp_path_factory.mktemp("sshd")) as bed:
        yield bed


@pytest.fixture
def fresh_bed(tmp_path):
    """A server of its own, for tests that stop it or change its keys."""
    with LoopbackSSHD(tmp_path / "sshd") as bed:
        yield bed


EDGE_PROFILE = """name = "x86-edge"
description = "this x86-64 machine posing as an edge device: onnxruntime CPU, fp32 and fp16"
arch = "x86_64"
accelerator = "cpu"
runtimes = ["ort-cpu"]
precisions = ["fp32", "fp16"]
max_opset = 17
memory_budget = "1 GiB"
python = "3.6"
threads = 1
"""
NO_ORT_PROFILE = EDGE_PROFILE.replace('"x86-edge"', '"x86-trt"').replace('["ort-cpu"]', '["tensorrt"]')


@pytest.fixture(scope="session")
def edge_profiles(tmp_path_factory):
    """Device profiles for this x86-64 machine as a device (fp32 + fp16 on ort-cpu; and one needing TensorRT)."""
    directory = tmp_path_factory.mktemp("devices")
    (directory / "x86-edge.toml").write_text(EDGE_PROFILE)
    (directory / "x86-trt.toml").write_text(NO_ORT_PROFILE)
    old = os.environ.get("EDGEROBUST_DEVICES")
    os.environ["EDGEROBUST_DEVICES"] = str(directory)
    yield directory
    if old is None:
        os.environ.pop("EDGEROBUST_DEVICES", None)
    else:
        os.environ["EDGEROBUST_DEVICES"] = old


@pytest.fixture(scope="session")
def edge_run(digits_run, edge_profiles, tmp_path_factory):
    """The digits run with one saved PGD set (the shared format), exported for x86-edge (fp32+fp16) and x86-cpu."""
    from runner_helpers import run_with_replay_set

    from edgerobust.export.api import export_run
    from edgerobust.run import RunDir

    run = run_with_replay_set(digits_run, tmp_path_factory.mktemp("edge"), 40)
    path = run.path
    export_run(run, ExportConfig(target="x86-edge", fp16=True, calibration=0, golden=32), progress=False)
    export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=32), progress=False)
    return RunDir.open(path)


@pytest.fixture
def edge_copy(edge_run, tmp_path):
    """A private copy of edge_run, its bundles too (a run records them relative to itself)."""
    import shutil

    from edgerobust.run import RunDir

    shutil.copytree(edge_run.path, tmp_path / "run", ignore=shutil.ignore_patterns("device"))
    return RunDir.open(tmp_path / "run")
