"""Registries, run directories, atomic writes, safe checkpoints and the training loop."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgerobust.data import load_dataset
from edgerobust.errors import CheckpointError, EdgeRobustError, ShapeError, UnknownNameError
from edgerobust.io import atomic_path, load_torch, save_torch
from edgerobust.models import build_model
from edgerobust.run import RunDir
from edgerobust.training import TrainConfig, Trainer
from edgerobust.training.api import train_model
from edgerobust.training.loop import LoopSetup


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownNameError, match="valid models: .*scnn2"):
        build_model("nosuchnet", (1, 8, 8), 10)
    with pytest.raises(UnknownNameError, match="valid datasets: .*digits"):
        load_dataset("nosuchdata")


def test_digits_is_real_and_fixed():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert train.input_shape == (1, 8, 8) and train.num_classes == 10
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert torch.equal(load_dataset("digits", "test").labels, test.labels)


def test_synthetic_any_shape_and_seeded():
    a = load_dataset("synthetic", "train", shape=(3, 16, 16), num_classes=4, size=32, seed=3)
    b = load_dataset("synthetic", "train", shape=(3, 16, 16), num_classes=4, size=32, seed=3)
    assert a.images.shape == (32, 3, 16, 16) and torch.equal(a.images, b.images)
    assert int(a.labels.max()) < 4


def test_input_shape_the_model_cannot_take():
    with pytest.raises(ShapeError, match="cannot take inputs of shape"):
        build_model("scnn1", (1, 1, 1), 10)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "file.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_with_pickled_payload_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weight": torch.zeros(2), "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds code objects.*refused"):
        load_torch(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_corrupt_and_truncated_checkpoints(tmp_path):
    save_torch(tmp_path / "ok.pt", {"w": torch.ones(100)})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("cut.pt", "junk.pt"):
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_torch(tmp_path / name)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torch(tmp_path / "missing.pt")


def test_run_directory_round_trip_and_provenance(digits_run):
    reopened = RunDir.open(digits_run.path)
    m = reopened.manifest
    assert m["model"]["spec"] == "scnn2:8-16" and m["seed"] == 0
    assert {"torch", "numpy", "python"} <= set(m["versions"])
    assert len(m["training"]["history"]) == 4
    model = reopened.load_model()
    test = load_dataset("digits", "test")
    acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc == pytest.approx(m["metrics"]["test_accuracy"], abs=1e-6)


def test_checkpoint_for_another_architecture(digits_run, tmp_path):
    other = train_model(tmp_path / "mlp", "mlp:16", "digits", TrainConfig(epochs=1), progress=False)
    (other.path / "model.pt").write_bytes(digits_run.weights_path.read_bytes())
    with pytest.raises(CheckpointError, match="another architecture"):
        RunDir.open(other.path).load_model()


def test_not_a_run_directory(tmp_path):
    with pytest.raises(EdgeRobustError, match="not an edgerobust run directory"):
        RunDir.open(tmp_path)


def _train_digits(tmp_path: Path, name: str, epochs: int = 3, **kw) -> Trainer:
    data = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = build_model("scnn2:8-16", data.input_shape, 10, data.mean, data.std)
    return Trainer(model, data, TrainConfig(epochs=epochs, batch_size=128, lr=0.05, schedule="cyclic", **kw),
                   LoopSetup(checkpoint_path=tmp_path / name / "checkpoint.pt"), progress=False)


def test_training_is_deterministic_under_a_seed(tmp_path):
    a, b = _train_digits(tmp_path, "a"), _train_digits(tmp_path, "b")
    a.fit(), b.fit()
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_resume_in_process_matches_uninterrupted(tmp_path):
    full = _train_digits(tmp_path, "full", epochs=4, augment=True)
    full.fit()
    first = _train_digits(tmp_path, "part", epochs=4, augment=True)
    first.config.epochs = 4
    first.fit_until = 2
    # stop after two epochs by asking for a stop, as a kill between epochs would
    class StopAfterTwo:
        def __getattr__(self, name):
            return lambda *a, **k: None

        def on_epoch_end(self, trainer, epoch, metrics):
            if trainer.epoch == 1:
                trainer.stop_reason = "test stop"

        def state_dict(self):
            return {}

    first.callbacks.append(StopAfterTwo())
    first.fit()
    assert first.epoch == 2
    state = load_torch(tmp_path / "part" / "checkpoint.pt")
    state["stop_reason"] = None  # what a killed run leaves: a checkpoint without a stop
    save_torch(tmp_path / "part" / "checkpoint.pt", state)
    resumed = _train_digits(tmp_path, "part", epochs=4, augment=True)
    resumed.fit(resume=True)
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_resume_refuses_changed_settings(tmp_path):
    _train_digits(tmp_path, "x", epochs=1).fit()
    changed = _train_digits(tmp_path, "x", epochs=2)
    with pytest.raises(CheckpointError, match="settings differ.*epochs"):
        changed.fit(resume=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgerobust", *args]


def test_killed_cli_run_resumes_to_the_same_weights(tmp_path):
    common = ["train", "--model", "scnn2:8-16", "--data", "digits", "--epochs", "12", "--batch-size", "32",
              "--quiet", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEROBUST_PROGRESS": "0"}
    subprocess.run(_cli(*common, "--out", str(tmp_path / "full")), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*common, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch = load_torch(killed / "checkpoint.pt")["epoch"]
    assert 1 <= epoch < 12, "the run should have been killed mid-way"
    assert not (killed / "model.pt").exists()
    subprocess.run(_cli(*common, "--out", str(killed), "--resume"), check=True, env=env, capture_output=True)
    full = load_torch(tmp_path / "full" / "model.pt")
    resumed = load_torch(killed / "model.pt")
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
