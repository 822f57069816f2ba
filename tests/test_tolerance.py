"""The derived golden tolerance (export/tolerance.py): it bounds what onnxruntime and PyTorch compute, and catches
an artifact that computes something else."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from torch import nn

from edgerobust.config import ExportConfig
from edgerobust.errors import EdgeRobustError
from edgerobust.export.api import export_run
from edgerobust.export.bundle import BundleError, read_manifest, verify_bundle, write_manifest
from edgerobust.export.fp16 import to_fp16
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.export.parity import ort_session, run_onnx, run_torch
from edgerobust.export.precisions import arithmetic_of, require_arithmetic
from edgerobust.export.tolerance import (
    compare_with_tolerance,
    decision_may_differ,
    exact_outputs,
    float64_outputs,
    forward_error_bound,
    golden_tolerances,
    smoothing_agreement,
)
from edgerobust.models.registry import build_model

# Several zoo models: dense, conv + max-pool, LeNet, VGG with global average pooling, normalisation inside each.
ZOO = [("mlp", (1, 8, 8)), ("scnn2-mp", (1, 8, 8)), ("lenet5", (1, 28, 28)), ("vgg-small", (3, 16, 16))]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    graphs = {}
    for spec, shape in ZOO:
        torch.manual_seed(0)
        model = build_model(spec, shape, 10, mean=[0.4] * shape[0], std=[0.3] * shape[0]).eval()
        proto = simplify(to_onnx(model, shape, 13))
        folder = tmp_path_factory.mktemp(spec)
        onnx.save(proto, folder / "model.onnx")
        onnx.save(to_fp16(proto), folder / "model.fp16.onnx")
        graphs[spec] = (model, proto, shape, {"fp32": ort_session(folder / "model.onnx"),
                                              "fp16": ort_session(folder / "model.fp16.onnx")})
    return graphs


def test_gamma_is_higham_and_infinite_past_one():
    fp32, fp16 = arithmetic_of("fp32"), arithmetic_of("fp16")
    assert fp32.gamma(1) == 2.0 ** -24 / (1 - 2.0 ** -24)
    assert fp16.gamma(576) == 576 * 2.0 ** -11 / (1 - 576 * 2.0 ** -11)
    assert fp16.gamma(2048) == math.inf and fp16.gamma(2047) > 1
    with pytest.raises(EdgeRobustError, match="unknown precision 'fp12'"):
        arithmetic_of("fp12")
    assert arithmetic_of("bf16") is None  # in the table, without an arithmetic model yet
    with pytest.raises(EdgeRobustError, match="bf16 has no arithmetic model"):
        require_arithmetic("bf16")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), spec=st.sampled_from([s for s, _ in ZOO]), batch=st.integers(1, 6))
def test_bound_holds_for_onnxruntime_and_pytorch_on_random_inputs(zoo, seed, spec, batch):
    model, proto, shape, sessions = zoo[spec]
    inputs = np.random.default_rng(seed).random((batch, *shape), dtype=np.float32)
    exact = exact_outputs(proto, inputs)
    reference = float64_outputs(model, inputs)
    bounds = {p: forward_error_bound(proto, inputs, p) for p in ("fp32", "fp16")}
    # The graph's exact function is the model's up to the exporter's constant folding, which rounds each folded
    # constant once to fp32: within the fp32 bound (one rounding per weight is below γ_n for n >= 1).
    assert np.all(np.abs(exact - reference) <= bounds["fp32"])
    golden = run_torch(model, inputs)
    assert np.all(np.abs(golden - reference) <= bounds["fp32"] + np.abs(exact - reference))  # PyTorch's fp32
    tolerances = golden_tolerances(proto, inputs, ["fp32", "fp16"], reference)
    for precision, session in sessions.items():
        outputs = run_onnx(session, inputs)
        assert np.all(np.abs(outputs - exact) <= bounds[precision]), precision
        got = compare_with_tolerance(outputs, golden, tolerances[precision])
        assert got["passed"] and got["logits_beyond_bound"] == 0 and got["max_diff_over_bound"] <= 1


def test_fp16_bound_is_wider_than_fp32_and_unbounded_where_n_u_reaches_one():
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()  # fan-in 3073 >= 1/u16 = 2048
    proto = simplify(to_onnx(wide, (3, 32, 32), 13))
    inputs = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    assert forward_error_bound(proto, inputs, "fp16") is None
    assert golden_tolerances(proto, inputs, ["fp32", "fp16"])["fp16"] is None
    fp32 = forward_error_bound(proto, inputs, "fp32")
    assert fp32.shape == (2, 10) and np.all(fp32 > 0) and np.all(np.isfinite(fp32))
    # Unbounded: only finiteness is checked.
    assert compare_with_tolerance(np.zeros((2, 10)), np.ones((2, 10)), None) == {
        "inputs": 2, "max_abs_diff": 1.0, "decisions_differing": 0, "top1_agreement": 1.0, "finite": True,
        "bounded": False, "passed": True}


def test_operator_without_an_error_rule_is_named():
    proto = simplify(to_onnx(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softmax(1)).eval(), (1, 2, 2), 13))
    with pytest.raises(EdgeRobustError, match="operator Softmax has no error rule"):
        forward_error_bound(proto, np.zeros((1, 1, 2, 2), np.float32), "fp32")


def test_decision_rule_allows_flips_only_near_the_boundary():
    golden = np.array([[1.0, 0.9, 0.0], [1.0, 0.0, 0.0]])
    tolerance = np.full((2, 3), 0.06)
    assert decision_may_differ(golden, tolerance).tolist() == [True, False]
    flipped_near = np.array([[0.95, 0.96, 0.0], [1.0, 0.0, 0.0]])
    got = compare_with_tolerance(flipped_near, golden, tolerance)
    assert got["passed"] and got["decisions_differing"] == 1 and got["decisions_near_boundary"] == 1
    flipped_far = np.array([[1.0, 0.9, 0.0], [1.0, 1.1, 0.0]])  # within no bound, and far from the boundary
    got = compare_with_tolerance(flipped_far, golden, tolerance)
    assert not got["passed"] and got["decisions_differing_not_allowed"] == 1 and got["logits_beyond_bound"] == 1


@pytest.fixture
def bundle(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run.path, run)
    return export_run(run, ExportConfig(target="jetson-nano", calibration=0, golden=16), progress=False).bundle


def perturb_beyond_bound(bundle, file_name: str, precision: str) -> float:
    """Shift the last layer's bias of one class by 4x the largest recorded bound and re-sign the bundle."""
    manifest = read_manifest(bundle)
    tolerance = np.load(bundle / manifest["models"][precision]["golden_tolerance"]["file"])
    shift = 4 * float(tolerance.max())
    proto = onnx.load(bundle / file_name)
    gemm = [n for n in proto.graph.node if n.op_type == "Gemm"][-1]
    init = next(i for i in proto.graph.initializer if i.name == gemm.input[2])
    bias = numpy_helper.to_array(init).copy()
    bias[0] += np.asarray(shift, dtype=bias.dtype)
    init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(proto, bundle / file_name)
    write_manifest(bundle, {k: v for k, v in manifest.items() if k not in ("format", "files")})  # re-signed
    return shift


def test_bundle_records_a_tolerance_per_precision_and_verify_uses_it(bundle):
    manifest = read_manifest(bundle)
    assert set(manifest["models"]) == {"fp32", "fp16"}
    for entry in manifest["models"].values():
        info = entry["golden_tolerance"]
        tolerance = np.load(bundle / info["file"])
        assert tolerance.shape == (16, 10) and info["max"] == float(tolerance.max()) > 0
        assert info["file"] in manifest["files"] and "Higham" in info["reference"]
    fp32 = np.load(bundle / "golden_tolerance.fp32.npy")
    fp16 = np.load(bundle / "golden_tolerance.fp16.npy")
    assert np.all(fp16 > fp32)
    figures = verify_bundle(bundle, run_golden=True)["golden"]
    assert figures["fp32"]["passed"] and figures["fp16"]["passed"]
    assert figures["fp32"]["max_diff_over_bound"] <= 1 and figures["fp16"]["logits_beyond_bound"] == 0


@pytest.mark.parametrize("precision, file_name", [("fp32", "model.onnx"), ("fp16", "model.fp16.onnx")])
def test_resigned_artifact_beyond_the_bound_is_caught(bundle, precision, file_name):
    perturb_beyond_bound(bundle, file_name, precision)
    assert verify_bundle(bundle)["sha256"] == "ok"  # the hashes alone vouch for it now
    with pytest.raises(BundleError, match=rf"{file_name} no longer reproduces the golden outputs within the derived"):
        verify_bundle(bundle, run_golden=True)


def test_smoothing_votes_agree_except_near_the_boundary(zoo):
    from edgerobust.runner.commands import noise_batches

    model, proto, shape, sessions = zoo["scnn2-mp"]
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    samples = np.concatenate(list(noise_batches(x, 0.5, 200, 64, 7, 3)))
    for precision, session in sessions.items():
        counts = np.bincount(run_onnx(session, samples).argmax(1), minlength=10)
        got = smoothing_agreement(proto, x, 3, 0.5, 200, 7, counts, precision)
        assert got["passed"] and got["disagreeing"] <= got["near_boundary"] and sum(got["host_counts"]) == 200
    # Votes moved away from where the host is certain are refused.
    moved = np.zeros(10, np.int64)
    moved[(np.array(got["host_counts"]).argmax() + 1) % 10] = 200
    wrong = smoothing_agreement(proto, x, 3, 0.5, 200, 7, moved, "fp32")
    assert not wrong["passed"] and wrong["disagreeing"] > wrong["near_boundary"]


def test_the_host_seals_the_tolerance_file_like_the_runner(bundle):
    from edgerobust.export.seal import SealError

    manifest = read_manifest(bundle)
    manifest["models"]["fp32"]["golden_tolerance"]["file"] = "../golden_tolerance.fp32.npy"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SealError, match=r"models\.fp32\.golden_tolerance\.file"):
        read_manifest(bundle)
