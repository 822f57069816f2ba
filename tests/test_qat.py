"""Quantization-aware training (training/qat.py): the fake quantization is the QDQ graph's arithmetic, every loss
trains through it, and the int8 export computes what the fake-quant model computes."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fake_device import OTHER, Elsewhere, OnOtherDevice
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from edgerobust.config import ExportConfig
from edgerobust.data import load_dataset
from edgerobust.export.api import export_run
from edgerobust.models import build_model
from edgerobust.models.fake_quant import fake_quantize, quantize, weight_scales
from edgerobust.training import TrainConfig
from edgerobust.training.api import TrainSetup, train_model
from edgerobust.training.loop import Callback, LoopSetup, Trainer
from edgerobust.training.qat import fake_quant_model, onnx_node_name

TEST = load_dataset("digits", "test")


def ort_quantize(x: np.ndarray, scale: float, zero: int, dtype: int) -> np.ndarray:
    """onnxruntime's own QuantizeLinear on `x` (float32), per tensor."""
    out_type = {TensorProto.UINT8: TensorProto.UINT8, TensorProto.INT8: TensorProto.INT8}[dtype]
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
        [helper.make_tensor_value_info("q", out_type, [len(x)])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]), helper.make_tensor("z", out_type, [], [zero])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


@settings(max_examples=60, deadline=None)
@given(k=st.lists(st.integers(-400, 400), min_size=1, max_size=32), exponent=st.integers(-8, 2),
       zero=st.integers(0, 255))
def test_ties_round_half_to_even_and_saturate_as_numpy_and_onnxruntime(k, exponent, zero):
    """x = (k + ½)·s exactly (s a power of two, so x/s is exact): every value is a tie; half to even, then clamp."""
    scale = 2.0 ** exponent
    x = ((np.asarray(k, np.float64) + 0.5) * scale).astype(np.float32)
    expected = np.clip(np.round(x.astype(np.float64) / scale) + zero, 0, 255)  # numpy rounds half to even
    got = quantize(torch.from_numpy(x), torch.tensor(scale), float(zero), 0, 255).numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, ort_quantize(x, scale, zero, TensorProto.UINT8))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-50, 50, width=32), min_size=1, max_size=64), st.floats(0.0009765625, 1.0, width=32),
       st.integers(-20, 20))
def test_quantize_is_onnxruntime_quantizelinear_for_any_scale(values, scale, zero):
    """Any float32 values and scale, signed int8: the same integers as onnxruntime (both divide, x/s)."""
    x = np.asarray(values, np.float32)
    got = quantize(torch.from_numpy(x), torch.tensor(scale, dtype=torch.float32), float(zero), -128, 127).numpy()
    np.testing.assert_array_equal(got, ort_quantize(x, scale, zero, TensorProto.INT8))


def test_straight_through_gradient_inside_the_range_and_none_outside():
    x = torch.tensor([-3.0, -0.26, 0.0, 0.74, 1.5, 9.0], requires_grad=True)
    fake_quantize(x, torch.tensor(0.5), 2.0, 0, 5).sum().backward()  # range [-1, 1.5]
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_weight_scales_are_onnxruntime_symmetric_per_channel():
    w = torch.tensor([[0.5, -1.27, 0.1], [0.0, 0.0, 0.0], [2.54, 0.3, -0.2]])
    s = weight_scales(w).flatten()
    assert s.tolist() == [torch.tensor(1.27 / 127).item(), 1.0, torch.tensor(2.54 / 127).item()]
    q = quantize(w, weight_scales(w), 0.0, -127, 127)
    assert q[0, 1] == -127 and q[2, 0] == 127


def test_onnx_node_names_follow_torchs_scopes():
    assert onnx_node_name("net.0", "Conv") == "/net/net.0/Conv"
    assert onnx_node_name("net.layers.0.0.conv1", "Conv") == "/net/layers/layers.0/layers.0.0/conv1/Conv"


@pytest.fixture(scope="module")
def qat_pgd_run(tmp_path_factory):
    """A digits scnn2 trained with QAT and the PGD loss (robust QAT), exported for x86-cpu with int8."""
    out = tmp_path_factory.mktemp("qat") / "run"
    run = train_model(out, "scnn2:8-16", "digits",
                      TrainConfig(epochs=3, batch_size=64, lr=0.05, augment=False, qat=True, loss="pgd-at"),
                      TrainSetup(adversarial={"eps": 0.1, "steps": 2}), progress=False)
    bundle = export_run(run, ExportConfig(target="x86-cpu", calibration=64, golden=16, force_int8=True),
                        progress=False).bundle
    return run, bundle


def test_robust_qat_trains_records_and_exports_the_learned_scales(qat_pgd_run):
    run, bundle = qat_pgd_run
    training = run.manifest["training"]
    assert "pgd" in json.dumps(training["loss"]) and training["config"]["qat"] is True
    qat = training["qat"]
    assert set(qat["points"]) == {"net.0", "net.2", "net.5", "net.7"} and qat["freeze_step"] > 0
    # the int8 graph's activation scales are the run's, not calibrated ones
    graph = onnx.load(str(bundle / "model.int8.onnx")).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    first_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0].startswith("/normalize"))
    assert float(inits[first_q.input[1]]) == np.float32(qat["points"]["net.0"]["input"][0])
    assert int(inits[first_q.input[2]]) == qat["points"]["net.0"]["input"][1]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["models"]["int8"]["quantization"]["qat"]["points"] == qat["points"]
    # the plain network's weights: the run loads without any quantizer
    assert not any("quantizer" in k or "observer" in k for k in run.load_model().state_dict())


def test_onnxruntime_int8_computes_what_the_fake_quant_model_computes(qat_pgd_run):
    """Parity of the exported QDQ graph and the fake-quant model on the whole digits test split.

    Both compute the same QDQ function; they differ only where a value before a QuantizeLinear lies within float32
    rounding of a tie (onnxruntime requantizes its int32 accumulator through a float32 multiplier, the fake-quant
    model rounds a float32 convolution), and there a quantized value moves by one step. The logits are both on the
    last QuantizeLinear's grid, so their difference is a whole number of output steps: the test asks that every
    prediction whose fake-quant margin exceeds two output steps agrees, and that at most 2% of logits differ at all.
    """
    run, bundle = qat_pgd_run
    model = run.load_model().eval()
    fake_quant_model(model, run.manifest["training"]["qat"], TEST.images[:2])
    with torch.no_grad():
        ours = model(TEST.images).double().numpy()
    theirs = ort.InferenceSession(str(bundle / "model.int8.onnx")).run(None, {"input": TEST.images.numpy()})[0]
    step = run.manifest["training"]["qat"]["points"]["net.7"]["output"][0]
    steps = (theirs.astype(np.float64) - ours) / step
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # both on the output grid
    assert np.mean(np.round(steps) != 0) <= 0.02
    top2 = np.sort(ours, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * step
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(theirs[clear].argmax(1), ours[clear].argmax(1))


def test_qat_int8_accuracy_is_at_least_post_training_int8s(tmp_path):
    """On digits (scnn2:8-16, 8 epochs, seed 0) the QAT run's int8 artifact is within 1 point of the post-training
    int8 artifact of the same natural run (measured: QAT 94.7 %, post-training 94.9 %, fp32 94.9 %)."""
    accuracy = {}
    for qat in (False, True):
        run = train_model(tmp_path / str(qat), "scnn2:8-16", "digits",
                          TrainConfig(epochs=8, batch_size=64, lr=0.05, augment=False, qat=qat), progress=False)
        bundle = export_run(run, ExportConfig(target="x86-cpu", calibration=256, golden=16, force_int8=True),
                            progress=False).bundle
        logits = ort.InferenceSession(str(bundle / "model.int8.onnx")).run(None, {"input": TEST.images.numpy()})[0]
        accuracy[qat] = float((logits.argmax(1) == TEST.labels.numpy()).mean())
    assert accuracy[True] >= accuracy[False] - 0.01, accuracy


def test_observers_freeze_at_the_step_and_a_checkpoint_keeps_them(tmp_path):
    data = load_dataset("digits", "train")
    snapshots = {}

    class Snapshot(Callback):
        def on_after_step(self, trainer):
            snapshots[trainer.global_step] = trainer.qat.qat.record()

    def trainer():
        torch.manual_seed(0)
        model = build_model("scnn2:8-16", data.input_shape, data.num_classes, data.mean, data.std)
        return Trainer(model, data, TrainConfig(epochs=2, batch_size=128, qat=True, qat_freeze_step=3),
                       LoopSetup(checkpoint_path=tmp_path / "c.pt", callbacks=[Snapshot()]), progress=False)
    first = trainer()
    first.fit()
    assert snapshots[0] != snapshots[1]  # observing before the freeze
    assert snapshots[2] == snapshots[max(snapshots)] == first.qat.qat.record()  # frozen after the third step
    second = trainer()
    second.load_checkpoint(tmp_path / "c.pt")
    assert second.qat.qat.record() == first.qat.qat.record()
    assert all(bool(q.frozen) for q in second.qat.qat.quantizers.values())


def test_a_batchnorm_after_a_convolution_carries_its_output_quantizer():
    """resnet20: BatchNorm folds into the convolution in the exported graph, so the output is quantized after it."""
    model = build_model("resnet20", (3, 32, 32), 10, [0.5] * 3, [0.25] * 3)
    from edgerobust.training.qat import QuantizationAware

    qat = QuantizationAware(model, torch.rand(2, 3, 32, 32))
    assert qat.output_at["net.conv1"] == "net.bn1"
    assert qat.output_at["net.layers.0.0.conv2"] == "net.layers.0.0.bn2"
    qat.detach()
    assert "forward" not in vars(dict(model.named_modules())["net.conv1"])


def test_qat_training_on_another_device_is_the_cpu_run():
    """Quantizers, observers and every scale live on the model's device: the same numbers as on the CPU."""
    data = load_dataset("digits", "train")
    def run(device):
        torch.manual_seed(0)
        model = build_model("scnn2:8-16", data.input_shape, data.num_classes, data.mean, data.std)
        trainer = Trainer(model, data, TrainConfig(epochs=1, batch_size=128, qat=True), LoopSetup(eval_data=TEST),
                          progress=False, device=device)
        history = trainer.fit().history
        return trainer, [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in history]

    cpu, cpu_history = run("cpu")
    with OnOtherDevice():
        other, other_history = run(OTHER)
        assert all(isinstance(b, Elsewhere) for b in other.qat.qat.quantizers.buffers() if b.numel())
    assert other_history == cpu_history
    assert other.qat.qat.record() == cpu.qat.qat.record()


@pytest.mark.slow
def test_resnet20_qat_export_agrees_with_its_fake_quant_model(tmp_path):
    """BatchNorm folded by the exporter, residual adds in float, 22 quantized layers: one-step flips at near-ties
    compound over depth (measured: logits within 4 output steps), predictions agree where the margin is clear."""
    run = train_model(tmp_path / "r", "resnet20", "digits",
                      TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False, qat=True), progress=False)
    bundle = export_run(run, ExportConfig(target="x86-cpu", calibration=64, golden=16, force_int8=True),
                        progress=False).bundle
    record = run.manifest["training"]["qat"]
    model = run.load_model().eval()
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert list(record["points"]) == layers and len(layers) == 22  # stem, 18 in blocks, 2 projections, classifier
    fake_quant_model(model, record, TEST.images[:2])
    with torch.no_grad():
        ours = model(TEST.images).double().numpy()
    theirs = ort.InferenceSession(str(bundle / "model.int8.onnx")).run(None, {"input": TEST.images.numpy()})[0]
    step = record["points"][list(record["points"])[-1]]["output"][0]
    top2 = np.sort(ours, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 16 * step
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(theirs[clear].argmax(1), ours[clear].argmax(1))


def test_compress_qat_retrains_the_pruned_model_through_int8_and_exports_its_scales(digits_run, tmp_path):
    """`compress --qat`: the masked retraining is QAT; the physically pruned run keeps the record and its int8
    export agrees with its fake-quant model."""
    from cli_helpers import run_cli

    code, out, err = run_cli("compress", "--model", digits_run.path, "--method", "l1", "--scheme", "filter", "--keep",
                             "0.5", "--retrain-epochs", "2", "--qat", "--no-evaluate", "--out", tmp_path / "c", "-q")
    assert code == 0, err
    from edgerobust.run import RunDir

    run = RunDir.open(tmp_path / "c")
    record = run.manifest["training"]["qat"]
    assert set(record["points"]) == {"net.0", "net.2", "net.5", "net.7"}
    assert run.manifest["training"]["config"]["qat"] is True
    bundle = export_run(run, ExportConfig(target="x86-cpu", int8=True, calibration=64, golden=16, force_int8=True),
                        progress=False).bundle
    model = run.load_model().eval()
    fake_quant_model(model, record, TEST.images[:2])
    with torch.no_grad():
        ours = model(TEST.images).double().numpy()
    theirs = ort.InferenceSession(str(bundle / "model.int8.onnx")).run(None, {"input": TEST.images.numpy()})[0]
    step = record["points"]["net.7"]["output"][0]
    top2 = np.sort(ours, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * step
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(theirs[clear].argmax(1), ours[clear].argmax(1))


def test_the_reports_training_section_says_the_run_is_qat(qat_pgd_run):
    from edgerobust.report.training import training_section

    run, _ = qat_pgd_run
    text = training_section(run, run.path / "figures")  # the report's figures live in the run
    assert "Quantization-aware training: weights int8, symmetric, per output channel" in text
    assert f"observers frozen at step {run.manifest['training']['qat']['freeze_step']}" in text
