"""Nothing lost: the four ways a command could destroy a user's data (issue 9 §1), each reproduced."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

from edgerobust.claim import LOCK_NAME, locked
from edgerobust.config import ExportConfig
from edgerobust.errors import EdgeRobustError
from edgerobust.pipeline.directory import MARKER_NAME

ROOT = Path(__file__).resolve().parents[1]
FAST_RECIPE = """
[pipeline]
steps = ["train"]
[model]
spec = "mlp:16"
[data]
name = "digits"
[train]
epochs = 1
augment = false
"""


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(directory.rglob("*"))}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def private_run(digits_run, tmp_path):
    """A copy of the shared digits run: an export records itself in its run's manifest."""
    from edgerobust.run import RunDir

    shutil.copytree(digits_run.path, tmp_path / "run")
    return RunDir.open(tmp_path / "run")


def test_pipeline_with_an_unknown_step_touches_nothing(digits_run, tmp_path):
    out = tmp_path / "mine"
    shutil.copytree(digits_run.path, out / "model")
    (out / "thesis.tex").write_text("two years of work")
    before = snapshot(out)
    code, _, err = run_cli("pipeline", "--out", out, "--steps", "train,bogus", "-q")
    assert code == 2 and "unknown pipeline step 'bogus'" in one_line(err)
    assert snapshot(out) == before


def test_pipeline_refuses_a_directory_it_did_not_claim_even_with_a_run_inside(digits_run, tmp_path):
    out = tmp_path / "mine"
    shutil.copytree(digits_run.path, out / "model")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    code, _, err = run_cli("pipeline", "--out", out, "--steps", "train", "-q")
    assert code == 2 and "not written by `edgerobust pipeline`" in one_line(err)
    assert snapshot(out) == before


def test_pipeline_rerun_replaces_only_its_own_entries(tmp_path):
    recipe = tmp_path / "fast.toml"
    recipe.write_text(FAST_RECIPE)
    out = tmp_path / "pipe"
    code, _, err = run_cli("pipeline", "--out", out, "--recipe", recipe, "-q")
    assert code == 0, err
    assert (out / MARKER_NAME).is_file() and (out / "model" / "model.json").is_file()
    (out / "mine.txt").write_text("added by the user after the first run")
    code, _, err = run_cli("pipeline", "--out", out, "--recipe", recipe, "-q")
    assert code == 0, err
    assert (out / "mine.txt").read_text() == "added by the user after the first run"
    assert (out / "model" / "model.json").is_file() and not (out / LOCK_NAME).exists()


def test_train_refuses_to_overwrite_a_compressed_run(digits_run, tmp_path):
    from edgerobust.compress.api import CompressConfig, compress_model

    compressed = compress_model(digits_run, tmp_path / "slim", CompressConfig(method="l1", keep=0.5,
                                                                               retrain_epochs=0), progress=False)
    before = snapshot(compressed.path)
    code, _, err = run_cli("train", "--model", "mlp:16", "--data", "digits", "--epochs", "1", "--out",
                           compressed.path, "-q")
    assert code == 2 and "already holds a run" in one_line(err)
    assert snapshot(compressed.path) == before


HOLD = "import sys, time\nfrom edgerobust.claim import locked\nwith locked(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    time.sleep(120)\n"


def hold_lock(directory: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, env=env,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_run_directory_in_use_is_refused_with_one_line_then_freed_when_its_owner_dies(tmp_path):
    out = tmp_path / "run"
    child = hold_lock(out)
    try:
        code, _, err = run_cli("train", "--model", "mlp:16", "--data", "digits", "--epochs", "1", "--out", out,
                               "-q")
        line = one_line(err)
        assert code == 2 and "in use by another edgerobust command" in line and f"pid {child.pid}" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        child.kill()  # SIGKILL: the kernel drops the lock with the process
        child.wait()
    code, _, err = run_cli("train", "--model", "mlp:16", "--data", "digits", "--epochs", "1", "--out", out, "-q")
    assert code == 0, err
    assert (out / "model.json").is_file() and not (out / LOCK_NAME).exists()


def test_two_trains_at_once_one_refused(tmp_path):
    """Two real processes: the second gets one line while the first trains, and writes nothing."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEROBUST_PROGRESS": "0"}
    first = subprocess.Popen([sys.executable, "-m", "edgerobust", "train", "--model", "mlp:16", "--data", "digits",
                              "--epochs", "100000", "--out", str(out), "-q"], env=env, stderr=subprocess.PIPE,
                             text=True)
    try:
        while not (out / "checkpoint.pt").exists() and first.poll() is None:  # training, lock held
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read()
        second = subprocess.run([sys.executable, "-m", "edgerobust", "train", "--model", "mlp:32", "--data",
                                 "digits", "--epochs", "1", "--resume", "--out", str(out), "-q"], env=env,
                                capture_output=True, text=True, timeout=600)
        assert second.returncode == 2
        line = one_line(second.stderr)
        assert "in use by another edgerobust command" in line and f"pid {first.pid}" in line
        assert first.poll() is None  # the first is still training, undisturbed
    finally:
        first.kill()
        first.wait()
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["epochs"] == 100000  # only the first command ever wrote here
    assert not (out / "model.json").exists()


def test_lock_is_reentrant_within_one_process_and_cleans_an_empty_directory_on_failure(tmp_path):
    out = tmp_path / "a" / "b"
    with locked(out), locked(out):
        assert (out / LOCK_NAME).is_file()
    assert not (out / LOCK_NAME).exists() and out.is_dir()
    fresh = tmp_path / "x" / "y"
    with pytest.raises(EdgeRobustError), locked(fresh):
        raise EdgeRobustError("boom")
    assert not (tmp_path / "x").exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_export_cleans_staging_directories_of_dead_owners_only(private_run, tmp_path):
    from edgerobust.export.api import export_run

    out = tmp_path / "bundle"
    stale = tmp_path / f".bundle.{dead_pid()}.abc123.partial"
    legacy = tmp_path / ".bundle.k2j4h5.partial"  # an older export's name, without a pid
    old = tmp_path / f".bundle.old-{dead_pid()}"
    live = tmp_path / f".bundle.{os.getpid()}.zzz.partial"
    unrelated = tmp_path / ".bundlex.1.partial"
    for path in (stale, legacy, old, live, unrelated):
        path.mkdir()
        (path / "model.onnx").write_bytes(b"half")
    export_run(private_run, ExportConfig(target="x86-cpu", calibration=0, golden=4), out=out, progress=False)
    assert not stale.exists() and not legacy.exists() and not old.exists()
    assert live.is_dir() and unrelated.is_dir() and (out / "manifest.json").is_file()


def test_a_killed_export_leaves_nothing_forever(private_run, tmp_path):
    """SIGKILL an export while it stages; the next export removes what it left."""
    from edgerobust.export.api import export_run

    out = tmp_path / "bundle"
    code = ("import sys, time\nfrom edgerobust.export import bundle\n"
            "real = bundle.save_array\n"
            "def slow(path, array):\n    real(path, array); print('staging', flush=True); time.sleep(120)\n"
            "bundle.save_array = slow\nimport edgerobust.export.api as api\napi.save_array = slow\n"
            "from edgerobust.run import RunDir\nfrom edgerobust.config import ExportConfig\n"
            "api.export_run(RunDir.open(sys.argv[1]), ExportConfig(target='x86-cpu', calibration=0, golden=4),"
            " out=sys.argv[2], progress=False)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(private_run.path), str(out)], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    try:
        assert child.stdout.readline().strip() == "staging"
        left = list(tmp_path.glob(".bundle.*.partial"))
        assert len(left) == 1
    finally:
        child.kill()
        child.wait()
    assert left[0].is_dir()  # what a killed export leaves
    export_run(private_run, ExportConfig(target="x86-cpu", calibration=0, golden=4), out=out, progress=False)
    assert not left[0].exists() and not list(tmp_path.glob(".bundle.*"))
