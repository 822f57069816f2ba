import os

import pytest
import torch
from arm64_testbed import arm64_host, arm64_testbed  # noqa: F401  (session fixtures: one test bed per session)
from hypothesis import settings
from remote_testbed import device_python, edge_copy, edge_profiles, edge_run, fresh_bed, ssh_bed  # noqa: F401
from user_package import package  # noqa: F401  (your model package, installed for one test)

from edgerobust.config import ExportConfig

os.environ.setdefault("EDGEROBUST_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))

# Property tests explore new examples on every run here; CI (HYPOTHESIS_PROFILE=ci in .ci/run) runs the examples a
# hash of each test picks, the same every time, so a landing is not decided by chance: what a local run finds
# becomes an @example.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A small trained digits model shared by tests that only read it."""
    from edgerobust.training import TrainConfig
    from edgerobust.training.api import train_model

    out = tmp_path_factory.mktemp("runs") / "digits"
    return train_model(out, "scnn2:8-16", "digits", TrainConfig(epochs=4, batch_size=64, lr=0.05, augment=False),
                       progress=False)


@pytest.fixture(scope="session")
def runner_bundle(digits_run, tmp_path_factory):
    """The digits run exported for jetson-nano (fp32 + fp16) with one PGD set in RUN/adversarial: the runner's bundle.

    Read-only for tests; a test that changes a bundle copies it first (tests/runner_helpers.copy_bundle).
    """
    from runner_helpers import run_with_replay_set

    from edgerobust.export.api import export_run

    run = run_with_replay_set(digits_run, tmp_path_factory.mktemp("runner"), 48)
    return export_run(run, ExportConfig(target="jetson-nano", fp16=True, calibration=0, golden=32),
                      progress=False).bundle


@pytest.fixture(scope="session")
def torch_free_python(request, tmp_path_factory):
    """A virtual environment with ONLY numpy and onnxruntime from the package index (no torch, no edgerobust),
    created once and kept in pytest's cache directory (a session temp directory without the cache plugin);
    returns its python executable. EDGEROBUST_TORCH_FREE_PYTHON names an existing one instead (offline CI)."""
    import subprocess
    import sys
    from pathlib import Path

    given = os.environ.get("EDGEROBUST_TORCH_FREE_PYTHON")
    if given:
        return Path(given)
    cache = getattr(request.config, "cache", None)
    venv = Path(cache.mkdir("torch-free-venv")) if cache is not None else tmp_path_factory.mktemp("torch-free-venv")
    python = venv / "bin" / "python"
    marker = venv / "installed.ok"
    if not marker.is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "numpy",
                        "onnxruntime"], check=True)
        marker.write_text("numpy onnxruntime\n")
    return python
