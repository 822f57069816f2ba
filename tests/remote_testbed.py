"""Fixtures of the remote harness's test bed: a real OpenSSH server on loopback and a torch-free device Python.

The device interpreter is a virtual environment whose site-packages hold only numpy and onnxruntime (linked from
the test environment, so no download): the runner's promise that it needs nothing else is checked by it.
Set EDGEROBUST_DEVICE_PYTHON to use another device interpreter instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from edgerobust.remote.testbed import LoopbackSSHD

DEVICE_PACKAGES = ("numpy", "numpy.libs", "onnxruntime")


def make_device_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python3*/site-packages"))
    source = Path(numpy.__file__).resolve().parent.parent
    for entry in source.iterdir():
        if entry.name in DEVICE_PACKAGES or entry.name.split("-")[0] in ("numpy", "onnxruntime") \
                and entry.name.endswith(".dist-info"):
            (site / entry.name).symlink_to(entry)
    python = path / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import numpy, onnxruntime\ntry:\n import torch\nexcept ImportError:"
                            "\n print('no torch')"], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert probe.stdout.strip() == "no torch", probe.stderr
    return python


@pytest.fixture(scope="session")
def device_python(tmp_path_factory) -> str:
    return os.environ.get("EDGEROBUST_DEVICE_PYTHON") or str(make_device_venv(tmp_path_factory.mktemp("device-venv")))


@pytest.fixture(scope="session")
def ssh_bed(tmp_path_factory):
    with LoopbackSSHD(tmp_path_factory.mktemp("sshd")) as bed:
        yield bed


@pytest.fixture
def fresh_bed(tmp_path):
    """A server of its own, for tests that stop it or change its keys."""
    with LoopbackSSHD(tmp_path / "sshd") as bed:
        yield bed
