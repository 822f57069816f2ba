"""Export: every zoo model matches onnxruntime, Jetson Nano opset, operator refusal, bundle integrity, bad input."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from rounding import U32, summation_order_bound
from torch import nn

from edgerobust.config import ExportConfig
from edgerobust.data.base import ArrayDataset
from edgerobust.devices import load_profile
from edgerobust.errors import EdgeRobustError, ShapeError
from edgerobust.export import export_onnx, opset_of, unsupported_operators
from edgerobust.export.api import export_run
from edgerobust.export.bundle import BundleError, read_manifest, verify_bundle
from edgerobust.export.calibration import calibration_sample
from edgerobust.export.memory import estimate_memory
from edgerobust.export.parity import compare, ort_session, run_onnx, run_torch
from edgerobust.models import MODELS, build_model
from edgerobust.models.normalize import NormalizedClassifier
from edgerobust.run import RunDir

SHAPES = [(1, 8, 8), (3, 16, 16), (3, 32, 32)]  # the smallest input each model takes keeps the test fast


def smallest_model(name: str):
    for shape in SHAPES:
        try:
            model = build_model(name, shape, 10, mean=[0.5] * shape[0], std=[0.25] * shape[0])
        except ShapeError:
            continue
        if all(p.numel() for p in model.parameters()):  # a layer shrunk to nothing is no test
            return model, shape
    raise AssertionError(f"{name} takes none of {SHAPES}")


@pytest.mark.filterwarnings("ignore:Initializing zero-element")  # probing shapes a model cannot take
@pytest.mark.parametrize("name", MODELS.names())
def test_every_zoo_model_exports_and_matches_onnxruntime(name, tmp_path):
    torch.manual_seed(0)
    model, shape = smallest_model(name)
    model.eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, shape, tmp_path / "m.onnx", opset=17)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert opset_of(proto) == 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    inputs = torch.rand(3, *shape).numpy()  # batch 3, while the export traced batch 2: the batch is dynamic
    ours, theirs = run_torch(model, inputs), run_onnx(ort_session(path), inputs)
    figures = compare(ours, theirs)
    # two float32 computations of one graph (onnxruntime, PyTorch) differ by summation order only
    assert figures["max_abs_diff"] <= summation_order_bound(model, inputs, U32)
    assert figures["top1_agreement"] == 1.0


def test_normalisation_is_inside_the_graph(tmp_path):
    model = build_model("mlp:16", (1, 8, 8), 10, mean=[0.3], std=[0.2]).eval()
    path = export_onnx(model, (1, 8, 8), tmp_path / "m.onnx", opset=13)
    pixels = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(ort_session(path), pixels), run_torch(model, pixels), atol=1e-5)
    unnormalised = run_torch(model.net, pixels)  # the body alone gives different logits
    assert np.abs(unnormalised - run_torch(model, pixels)).max() > 1e-2


class WithFmod(nn.Module):
    """A layer TensorRT 8.2 cannot parse: Mod (torch.fmod) at opset 13."""

    def forward(self, x):
        return torch.fmod(x * 7.0, 1.0).flatten(1)[:, :10]


def test_unsupported_operator_is_refused_for_the_target_naming_it(tmp_path):
    model = NormalizedClassifier(WithFmod(), [0.0], [1.0]).eval()
    nano = load_profile("jetson-nano")
    with pytest.raises(EdgeRobustError, match=r"jetson-nano.* cannot run operator Mod"):
        export_onnx(model, (1, 8, 8), tmp_path / "nano.onnx", opset=13, operator_set=nano.operator_set,
                    target=nano.name)
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file
    # the same graph is fine for a target whose runtime runs any standard operator
    path = export_onnx(model, (1, 8, 8), tmp_path / "cpu.onnx", opset=13, operator_set="onnx")
    assert "Mod" in {n.op_type for n in onnx.load(path).graph.node}
    assert unsupported_operators(onnx.load(path), "tensorrt-8.5") == []  # TensorRT 8.5 parses Mod


def test_custom_domain_operator_is_refused():
    node = onnx.helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft")
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, [1])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1])])
    assert unsupported_operators(onnx.helper.make_model(graph), "onnx") == ["com.microsoft::FusedConv"]


# ---- export_run and the bundle --------------------------------------------------------------------------------
@pytest.fixture()
def run(digits_run, tmp_path):
    """A private copy of the shared digits run (export writes into the run's manifest)."""
    copy = tmp_path / "run"
    shutil.copytree(digits_run.path, copy)
    return RunDir.open(copy)


def test_jetson_nano_bundle_opset_fp16_parity_and_manifest(run):
    result = export_run(run, ExportConfig(target="jetson-nano", calibration=32), progress=False)
    bundle = result.bundle
    assert bundle == run.path / "export-jetson-nano"
    for name in ("model.onnx", "model.fp16.onnx"):
        assert opset_of(onnx.load(bundle / name)) <= 13  # read back from the file
    m = read_manifest(bundle)
    assert m["precisions"] == ["fp32", "fp16"] and m["runtime"] == "tensorrt"
    fp32, fp16 = m["models"]["fp32"]["parity"], m["models"]["fp16"]["parity"]
    assert fp32["max_abs_diff"] <= 1e-4 and fp32["top1_agreement"] == 1.0 and fp32["inputs"] == 64
    assert fp16["precision"] == "fp16" and fp16["max_rel_diff"] <= 1e-2 and fp16["top1_agreement"] >= 0.95
    fp16_graph = onnx.load(bundle / "model.fp16.onnx")
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16_graph.graph.initializer)
    # the run's manifest records the parity figures per target
    recorded = RunDir.open(run.path).manifest["export"]["jetson-nano"]
    assert recorded["parity"]["fp32"]["max_abs_diff"] == fp32["max_abs_diff"]
    assert recorded["memory"]["estimate_bytes"] <= load_profile("jetson-nano").memory_budget_bytes
    # every file is listed with its sha256; golden arrays are plain .npy (format 1.0) for numpy 1.19
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    runner = set(m["runner"]["files"])  # the device runner travels with the bundle (tests/test_runner.py)
    assert files == set(m["files"]) and files - runner == {
        "model.onnx", "model.fp16.onnx", "profile.json", "golden_inputs.npy", "golden_outputs.npy",
        "golden_labels.npy", "calibration.npz", "golden_tolerance.fp32.npy",
        "golden_tolerance.fp16.npy"}
    assert (bundle / "golden_inputs.npy").read_bytes()[:8] == b"\x93NUMPY\x01\x00"
    golden_in, golden_out = np.load(bundle / "golden_inputs.npy"), np.load(bundle / "golden_outputs.npy")
    assert golden_in.dtype == np.float32 and golden_in.min() >= 0 and golden_in.max() <= 1
    model = run.load_model()  # golden outputs: the same float32 forward (on the export's device)
    assert np.abs(golden_out - run_torch(model, golden_in)).max() <= summation_order_bound(model, golden_in, U32)
    assert np.load(bundle / "calibration.npz")["input"].shape == (32, *run.input_shape)
    assert verify_bundle(bundle, run_golden=True)["golden"]["fp16"]["top1_agreement"] >= 0.95


def test_tampered_bundle_fails_verification(run):
    bundle = export_run(run, ExportConfig(target="x86-cpu", calibration=0), progress=False).bundle
    assert verify_bundle(bundle)["sha256"] == "ok"
    outputs = bundle / "golden_outputs.npy"
    original = outputs.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0x01  # one bit of one logit
    outputs.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="golden_outputs.npy has been modified"):
        verify_bundle(bundle)
    outputs.write_bytes(original)
    (bundle / "extra.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match="extra.onnx is not listed"):
        verify_bundle(bundle)
    (bundle / "extra.onnx").unlink()
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is missing"):
        verify_bundle(bundle)
    code, _, err = run_cli("verify", bundle)
    assert code == 2 and "model.onnx is missing" in err


def test_reexport_replaces_the_bundle(run):
    first = export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=8), progress=False)
    (first.bundle / "stale.txt").write_text("old")
    second = export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=16), progress=False)
    assert not (second.bundle / "stale.txt").exists()
    assert read_manifest(second.bundle)["golden"]["count"] == 16
    assert [p.name for p in run.path.iterdir() if p.name.startswith(".")] == []


def assert_no_bundle(parent):
    leftovers = [p.name for p in parent.iterdir() if "export" in p.name or p.name.endswith(".partial")]
    assert leftovers == [], leftovers


def test_parity_failure_writes_nothing(run):
    with pytest.raises(EdgeRobustError, match="fp16 export does not match PyTorch"):
        export_run(run, ExportConfig(target="a100", fp16_tolerance=1e-12), progress=False)
    assert_no_bundle(run.path)
    assert "export" not in RunDir.open(run.path).manifest


def test_memory_over_budget_is_refused(run, tmp_path):
    from edgerobust.cli.devices import profile_text

    tiny = tmp_path / "tiny-cpu.toml"
    tiny.write_text(profile_text(load_profile("x86-cpu")).replace('name = "x86-cpu"', 'name = "tiny-cpu"')
                    .replace('memory_budget = "4 GiB"', 'memory_budget = "16 KiB"'))
    with pytest.raises(EdgeRobustError, match=r"needs about .* at batch 8 .* allows 0.0 MiB"):
        export_run(run, ExportConfig(target=str(tiny), batch=8), progress=False)
    assert_no_bundle(run.path)


@pytest.mark.parametrize("args,message", [
    (("--target", "jetson-nano", "--int8"), "does not support int8"),
    (("--target", "jetson-nano", "--opset", "17"), "opset ≤ 13, not 17"),
    (("--target", "jetson-nan"), "unknown target 'jetson-nan'; valid targets:"),
    (("--target", "jetson-nano", "--engine"), "TensorRT is not installed"),
    (("--target", "x86-cpu", "--fp16"), "does not support fp16"),
])
def test_bad_export_input_is_one_line_and_writes_nothing(run, monkeypatch, args, message):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as on a machine without it
    code, out, err = run_cli("export", run.path, *args, "-q")
    assert code == 2, (out, err)
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert_no_bundle(run.path)


def test_tensorrt_error_names_the_extra(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgeRobustError, match="`tensorrt` extra"):
        export_run(run, ExportConfig(target="jetson-nano", engine=True), progress=False)


def test_unwritable_output_path(run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = run_cli("export", run.path, "--out", blocker / "bundle", "-q")
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("export", run.path, "--out", blocker, "-q")
    assert code == 2 and "not a directory" in err
    assert blocker.read_text() == "not a directory"


def test_cli_export_then_verify_and_report(run, tmp_path):
    out = tmp_path / "bundles" / "cpu"
    code, stdout, err = run_cli("export", run.path, "--target", "x86-cpu", "--out", out, "--batch", "4", "-q")
    assert code == 0, err
    assert "export for x86-cpu" in stdout and "model.onnx" in stdout and (out / "manifest.json").is_file()
    code, stdout, _ = run_cli("verify", out)
    assert code == 0 and "golden outputs reproduced" in stdout
    from edgerobust.report import render_report

    text = render_report(run.path).read_text()
    assert "## Export" in text and "x86-cpu" in text


def test_pipeline_step_exports_and_verifies(run, tmp_path):
    from edgerobust.pipeline import PipelineContext, run_steps

    ctx = PipelineContext(out=tmp_path / "pipe", recipe={"export": {"target": "jetson-nano-cpu"}}, progress=False,
                          run=run)
    run_steps(ctx, ["export"])
    assert verify_bundle(tmp_path / "pipe" / "export-jetson-nano-cpu")["sha256"] == "ok"
    assert ("export", "fp32 top-1 agreement", 1.0) in ctx.summary


# ---- properties --------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=80), st.integers(1, 80), st.integers(0, 3))
def test_calibration_sample_is_class_balanced(labels, count, seed):
    dataset = ArrayDataset(torch.rand(len(labels), 1, 2, 2), torch.tensor(labels), 5, "t", "train")
    images, chosen = calibration_sample(dataset, count, seed)
    assert len(chosen) == len(images) == min(count, len(labels))
    present = sorted(set(labels))
    taken = np.bincount(chosen, minlength=5)[present]
    available = np.bincount(labels, minlength=5)[present]
    # round-robin: a class is short of the fullest one only when it ran out of images
    assert all(t == a or t >= taken.max() - 1 for t, a in zip(taken, available, strict=True))


@pytest.fixture(scope="module")
def resnet_graph(tmp_path_factory):
    model = build_model("resnet20", (3, 16, 16), 10)
    return onnx.load(export_onnx(model, (3, 16, 16), tmp_path_factory.mktemp("m") / "r.onnx", opset=13))


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 64))
def test_activation_memory_scales_with_batch(resnet_graph, batch):
    one, many = estimate_memory(resnet_graph, 1), estimate_memory(resnet_graph, batch)
    assert many["weights_bytes"] == one["weights_bytes"] > 0
    assert many["activation_peak_bytes"] == batch * one["activation_peak_bytes"]
    assert many["activation_total_bytes"] == batch * one["activation_total_bytes"]
    assert one["activation_peak_bytes"] <= one["activation_total_bytes"]
