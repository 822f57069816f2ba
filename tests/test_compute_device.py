"""One device, threaded through: `resolve_device`, and the plumbing checked on a CPU-backed second device.

`fake_device.OnOtherDevice` makes a device that computes on the CPU but refuses to mix with it, so every place
that would feed a CPU batch to a GPU model fails here, on a machine without a GPU; and because the arithmetic is
the CPU's, a run there must equal the CPU run exactly.
"""
from __future__ import annotations

import pytest
import torch
from fake_device import OTHER, DeviceMismatch, Elsewhere, OnOtherDevice

from edgerobust.compute_device import Placement, describe_device, placement, resolve_device, to_model
from edgerobust.data import load_dataset
from edgerobust.errors import EdgeRobustError
from edgerobust.models import build_model, count_flops
from edgerobust.training import TrainConfig, Trainer, build_training_loss, evaluate_clean
from edgerobust.training.loop import LoopSetup
from edgerobust.training.overfit_guard import CatastrophicOverfittingGuard


# -- resolve_device -------------------------------------------------------------------------------------------------
def test_auto_and_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(OTHER) == OTHER  # a torch.device is already resolved
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(EdgeRobustError, match="CUDA is not available") as info:
            resolve_device(spec)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "cuda:-1", "tpu:0", "cpu:0"])
def test_unknown_devices_are_one_line(spec):
    with pytest.raises(EdgeRobustError, match="unknown device") as info:
        resolve_device(spec)
    assert "\n" not in str(info.value) and "auto, cpu, cuda or cuda:N" in str(info.value)


def test_cuda_indices_against_the_devices_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(EdgeRobustError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_cli_refuses_an_absent_gpu_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgerobust.cli.app import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["train", "-m", "scnn2:8-16", "--epochs", "1", "--device", "cuda:0", "-q",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("command", ["train", "compress", "evaluate", "export", "bench", "pipeline"])
def test_every_computing_command_takes_a_device(command):
    import inspect

    from edgerobust.cli.app import app

    callback = next(c.callback for c in app.registered_commands if c.callback.__name__ == command)
    option = inspect.signature(callback).parameters["device"].default
    assert option.param_decls == ("--device",) and option.default == "auto"


def test_batches_take_the_models_place():
    model = build_model("scnn2:8-16", (1, 8, 8), 10).double()
    assert placement(model) == Placement(torch.device("cpu"), torch.float64)
    x, y = to_model(model, torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3]))
    assert x.dtype == torch.float64 and y.dtype == torch.int64
    assert describe_device(torch.device("cpu")) == {"device": "cpu", "type": "cpu"}


# -- the fake device ------------------------------------------------------------------------------------------------
DATA = load_dataset("digits", "train").subset(96)
TEST = load_dataset("digits", "test").subset(48)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("scnn2:8-16", DATA.input_shape, DATA.num_classes, DATA.mean, DATA.std)


def _plain_state(model) -> dict[str, torch.Tensor]:
    return {k: torch.Tensor.as_subclass(v.detach(), torch.Tensor).clone() for k, v in model.state_dict().items()}


def test_a_cpu_batch_reaching_a_model_elsewhere_fails():
    """The check itself: the bug it exists to catch (and the fix that passes)."""
    with OnOtherDevice():
        model = _model().to(OTHER)
        assert isinstance(next(model.parameters()), Elsewhere) and placement(model).device == OTHER
        with pytest.raises(DeviceMismatch):
            model(TEST.images[:4])
        with pytest.raises(DeviceMismatch):  # a mask made on the device indexing a CPU tensor
            TEST.labels[:4][model(to_model(model, TEST.images[:4])).argmax(1) > 0]
        assert model(to_model(model, TEST.images[:4])).shape == (4, 10)


@pytest.mark.parametrize("method", ["natural", "pgd-at", "fgsm-rs", "trades"])
def test_training_on_another_device_is_the_cpu_run(method):
    """Model and every batch on the device (the guard's batch, clean evaluation, FLOP counting too): same numbers."""
    def run(device):
        loss = None if method == "natural" else build_training_loss(method, eps=0.1, steps=2)
        guard = CatastrophicOverfittingGuard(0.1, steps=2, batch_size=32)
        trainer = Trainer(_model(), DATA, TrainConfig(epochs=2, batch_size=32, seed=3), LoopSetup(loss=loss,
                                                                                                  eval_data=TEST,
                                                                                                  callbacks=[guard]),
                                                                                                  progress=False,
                                                                                                  device=device)
        history = trainer.fit().history
        return trainer, [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in history]

    cpu, cpu_history = run("cpu")
    with OnOtherDevice():
        other, other_history = run(OTHER)
        assert other.device == OTHER and isinstance(next(other.model.parameters()), Elsewhere)
        assert count_flops(other.model, DATA.input_shape) == count_flops(cpu.model, DATA.input_shape)
        assert evaluate_clean(other.model, TEST) == evaluate_clean(cpu.model, TEST)
    assert other_history == cpu_history
    theirs = _plain_state(other.model)
    assert all(torch.equal(theirs[k], v) for k, v in cpu.model.state_dict().items())


def test_evaluation_on_another_device_is_the_cpu_run():
    """Suite machinery, transfer matrix and minimal perturbations with FAB (device-correct since it was written);
    points stay on the CPU, batches go to the model, results come back."""
    from edgerobust.attacks import get_attack
    from edgerobust.evaluation.minimal import minimal_perturbations
    from edgerobust.evaluation.suite import robust_accuracy, run_cumulative
    from edgerobust.evaluation.transfer import transfer_matrix

    def run(device):
        a, b = _model(0).to(device), _model(1).to(device)
        fab = get_attack("fab", eps=0.2, steps=3, seed=0)
        cumulative, _, robust = run_cumulative(a, TEST.images, TEST.labels, [fab], batch_size=20)
        return (cumulative, robust, robust_accuracy(b, TEST.images, TEST.labels, fab, batch_size=20),
                transfer_matrix({"a": a, "b": b}, TEST.images, TEST.labels, fab, batch_size=20)["accuracy"],
                minimal_perturbations(a, TEST.images[:16], TEST.labels[:16], "fab", batch_size=8, steps=3))

    expected = run(torch.device("cpu"))
    with OnOtherDevice():
        got = run(OTHER)
    assert not isinstance(got[1], Elsewhere)  # per-point results are back on the CPU
    assert got[0] == expected[0] and torch.equal(got[1], expected[1]) and got[2:4] == expected[2:4]
    assert {k: v for k, v in got[4].items() if k != "seconds"} == \
        {k: v for k, v in expected[4].items() if k != "seconds"}


def test_compression_on_another_device_is_the_cpu_run(tmp_path, monkeypatch):
    """compress_model end to end (pretraining, ADMM, masked retraining, torch-pruning's removal) on the device."""
    import edgerobust.compress.api as compress_api
    import edgerobust.training.api as train_api
    from edgerobust.compress.api import CompressConfig, compress_model
    from edgerobust.io import load_torch

    def run(out, device):
        monkeypatch.setattr(compress_api, "resolve_device", lambda _spec: device)
        monkeypatch.setattr(train_api, "resolve_device", lambda _spec: device)
        return compress_model("scnn2:8-16", out, CompressConfig(keep=0.5, admm_epochs=1, retrain_epochs=1),
                              TrainConfig(epochs=1, batch_size=128, seed=4), progress=False)

    cpu = run(tmp_path / "cpu", torch.device("cpu"))
    with OnOtherDevice():
        other = run(tmp_path / "other", OTHER)
    assert other.manifest["compression"]["removed_channels"] == cpu.manifest["compression"]["removed_channels"]
    assert other.manifest["compression"]["device"]["type"] == "meta"
    for stage in ("pretrain", "admm", "retrain", "."):
        a, b = load_torch(tmp_path / "cpu" / stage / "model.pt"), load_torch(tmp_path / "other" / stage / "model.pt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage
    assert other.manifest["weights_sha256"] == cpu.manifest["weights_sha256"]  # saved as plain CPU tensors


def test_export_reference_on_another_device_is_the_cpu_one():
    import numpy as np

    from edgerobust.export.onnx_export import to_onnx
    from edgerobust.export.parity import run_torch

    model = _model()
    inputs = TEST.images[:10].numpy()
    expected = run_torch(model, inputs)
    with OnOtherDevice():
        other = _model().to(OTHER)
        got = run_torch(other, inputs)
        proto = to_onnx(other, DATA.input_shape, 13)
        assert isinstance(next(other.parameters()), Elsewhere)  # tracing used a CPU copy; the model stayed put
    assert np.array_equal(got, expected) and proto.graph.input[0].name == "input"
