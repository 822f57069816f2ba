"""Certificates for the int8 (onnxruntime QDQ) artifact (issue 23, "Certificates for the int8 artifact").

The bound engine's QuantizeLinear/DequantizeLinear rules and the static windows (bounds/quantized.py) against what
onnxruntime computes: its int8 outputs at random and attacked points inside every certified ball, on random small
QDQ networks, at ε = 0, and a network certified in float whose int8 version flips inside the ball. Comparisons are
exact in float64 (margins against their certified lower bounds, outputs against bounds widened by the engine's own
error term); nothing is tuned to one CPU.
"""
from __future__ import annotations

import math
import shutil

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper
from torch import nn

from edgerobust.bounds import ARITHMETIC_MODELS, Ball, BoundError, Engine, from_onnx, magnitudes
from edgerobust.bounds.rules.quantize import WINDOW, QuantizeLinear
from edgerobust.certify.core import certify_points
from edgerobust.config import ExportConfig
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.export.parity import ort_session, run_onnx
from edgerobust.export.quantize import quantize_int8
from edgerobust.models.normalize import NormalizedClassifier
from edgerobust.remote.certify_check import violations
from edgerobust.runner.balls import ball_batches

INT8 = ARITHMETIC_MODELS.get("int8")


@pytest.fixture(scope="module")
def int8_bundle(digits_run, tmp_path_factory):
    """The digits run exported for x86-cpu: fp32 and onnxruntime's QDQ int8 (the export's own quantizer)."""
    from edgerobust.export.api import export_run
    from edgerobust.run import RunDir

    run = RunDir.open(shutil.copytree(digits_run.path, tmp_path_factory.mktemp("int8cert") / "run"))
    return export_run(run, ExportConfig(target="x86-cpu", calibration=64, golden=32, parity_points=64),
                      progress=False)


def output_bounds(engine, x, eps, norm="inf", method="crown"):
    """(lo - e, hi + e) of the logits over the ball: what the artifact may output, e the int8 model's error term."""
    table = engine.bounds(Ball(torch.from_numpy(x), eps, norm), method)
    e = engine.errors(magnitudes(table), INT8, table)[engine.graph.output]
    lo, hi = table[engine.graph.output]
    return (lo - e).numpy(), (hi + e).numpy()


def attack_points(path, x, labels, eps):
    """PGD-20 on the artifact's differentiable surrogate (its own QDQ graph), every iterate kept, snapped into the
    ball in float32 exactly (a coordinate one ulp outside moves back towards the centre)."""
    from edgerobust.attacks.pgd import PGD
    from edgerobust.evaluation.surrogate import ArtifactSurrogate

    surrogate = ArtifactSurrogate(path)
    points = [PGD(eps, "linf", steps=20, restarts=2).perturb(surrogate, torch.from_numpy(x).float(),
                                                              torch.from_numpy(labels)).detach().numpy()]
    points = np.concatenate(points).astype(np.float32)
    base = np.concatenate([x] * (len(points) // len(x)))
    low, high = np.maximum(0, base - eps), np.minimum(1, base + eps)
    out = points.copy()
    for _ in range(2):
        wide = out.astype(np.float64)
        out = np.where(wide > high, np.nextafter(out, np.float32(-np.inf)), out)
        out = np.where(wide < low, np.nextafter(out, np.float32(np.inf)), out)
    assert (out.astype(np.float64) >= low).all() and (out.astype(np.float64) <= high).all()
    return out


@pytest.mark.parametrize("eps", [0.005, 0.02])
def test_onnxruntime_int8_outputs_stay_inside_every_certified_ball(int8_bundle, eps):
    """For every point certified for the int8 artifact: onnxruntime's int8 outputs at 10,000 points drawn in the
    ball (half of them vertices) and at PGD's points against the artifact's surrogate keep y_label - y_j above the
    certified lower bound, and every logit inside the int8 bounds."""
    bundle = int8_bundle.bundle
    path = bundle / "model.int8.onnx"
    x = np.load(bundle / "golden_inputs.npy")[:8].astype(np.float64)
    labels = np.load(bundle / "golden_labels.npy")[:8].astype(np.int64)
    engine = Engine(from_onnx(onnx.load(path)))
    certs = certify_points(engine, x, labels, eps, "inf", "crown", [INT8])
    correct = engine.output(torch.from_numpy(x)).argmax(1).numpy() == labels
    certified = np.flatnonzero(certs.certified["int8"] & correct)
    assert len(certified) > 0, "nothing certified: the check below would check nothing"
    session = ort_session(path)
    lo, hi = output_bounds(engine, x, eps)
    attacked = attack_points(path, x, labels, eps)
    for i in certified:
        bound = [None if not np.isfinite(v) else float(v) for v in certs.bounds["int8"][i]]
        samples = np.concatenate(list(ball_batches(x[i].astype(np.float32), eps, "inf", 10_000, 2_500, 0, int(i))))
        for points in (samples, attacked[i::len(x)]):
            out = run_onnx(session, points)
            found = violations(out, int(labels[i]), bound)
            assert found["violations"] == 0, found["first"]
            wide = out.astype(np.float64)
            assert (wide >= lo[i]).all() and (wide <= hi[i]).all()


def test_at_eps_zero_the_bounds_hold_onnxruntime_and_the_exact_forward_pass(int8_bundle):
    bundle = int8_bundle.bundle
    path = bundle / "model.int8.onnx"
    x = np.load(bundle / "golden_inputs.npy").astype(np.float64)
    engine = Engine(from_onnx(onnx.load(path)))
    out = run_onnx(ort_session(path), x.astype(np.float32)).astype(np.float64)
    exact = engine.output(torch.from_numpy(x)).numpy()
    for method in ("ibp", "crown"):
        lo, hi = output_bounds(engine, x, 0.0, method=method)
        assert (out >= lo).all() and (out <= hi).all()
        assert (exact >= lo).all() and (exact <= hi).all()
    # exact: every logit is one of the output quantizer's levels, so the engine and onnxruntime agree to the
    # output's float32 rounding except where a rounding the windows leave open went the other way (a whole step)
    step = float(next(n for n in engine.graph.nodes if n.outputs[0] == engine.graph.output).const(1))
    apart = np.abs(out - exact)  # a whole number of steps, up to onnxruntime's float32 (q - z)·s
    assert (np.abs(apart - step * np.round(apart / step)) <= 2.0 ** -23 * (np.abs(exact) + np.abs(out))).all()


def test_certify_writes_int8_rows_naming_the_artifact_and_its_kernel_assumptions(int8_bundle, tmp_path):
    from cli_helpers import run_cli

    from edgerobust.export.bundle import read_manifest
    from edgerobust.io import read_json
    from edgerobust.report import render_report
    from edgerobust.run import RunDir

    run = RunDir.open(shutil.copytree(int8_bundle.bundle.parent, tmp_path / "run"))
    code, out, err = run_cli("certify", run.path, "--eps", "0.01", "--n", "4", "--method", "ibp")
    assert code == 0, err
    record = read_json(run.path / "certificates.json")
    manifest = read_manifest(run.path / int8_bundle.bundle.name)
    assert [a["precision"] for a in record["artifacts"]] == ["fp32", "int8"] and not record["not_certified"]
    int8 = record["artifacts"][1]
    assert int8["sha256"] == manifest["files"][int8["file"]]["sha256"] and int8["file"] == "model.int8.onnx"
    model = {m["name"]: m for m in int8["arithmetic_models"]}
    assert set(model) == {"real", "int8"}
    assumed = model["int8"]["kernels"]
    assert "int32" in assumed and "16-bit" in assumed and "float32" in assumed
    assert [r["arithmetic"] for r in int8["rows"]] == ["real", "int8"]
    assert "int8" in int8["radius"] and 0 <= int8["radius"]["int8"]["mean"] <= 0.5
    assert "int8" in out
    report = render_report(run).read_text()
    assert "not certified" not in report and "| int8 | int8 |" in report
    # a rounding has no Lipschitz constant: the Lipschitz methods leave int8 out, and refuse it asked by name
    code, out, err = run_cli("certify", run.path, "--eps", "0.01", "--n", "2", "--method", "lipschitz", "--norm", "2",
                             "--no-radius")
    assert code == 0, err
    record = read_json(run.path / "certificates.json")
    assert [a["precision"] for a in record["artifacts"]] == ["fp32"]
    assert "discontinuous" in record["not_certified"]["int8"]
    code, out, err = run_cli("certify", run.path, "--eps", "0.01", "--n", "2", "--method", "peck", "--norm", "2",
                             "--precision", "int8")
    assert code == 2 and "peck cannot certify int8" in err and len(err.strip().splitlines()) == 1


# --- a network certified in float whose int8 version flips inside the ball ----------------------------------------

def threshold_net(quantized: bool) -> onnx.ModelProto:
    """logits = (x - 0.535, 0) for x in [0, 1] ([N, 1]); the int8 version quantizes x to steps of 0.1 first."""
    inits = [numpy_helper.from_array(np.array([[1.0, 0.0]], np.float32), "W"),
             numpy_helper.from_array(np.array([-0.535, 0.0], np.float32), "b")]
    nodes = [helper.make_node("Gemm", ["xq" if quantized else "input", "W", "b"], ["logits"])]
    if quantized:
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.uint8), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xq"]), *nodes]
    graph = helper.make_graph(nodes, "threshold", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                                                 ["N", 1])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_network_certified_in_float_whose_int8_version_flips_inside_the_ball_is_not_certified(tmp_path):
    x, labels, eps = np.array([[0.55]]), np.array([0]), 0.01  # the ball [0.54, 0.56]: x - 0.535 >= 0.005 > 0
    fp32 = certify_points(Engine(from_onnx(threshold_net(False))), x, labels, eps, "inf", "crown",
                          [ARITHMETIC_MODELS.get("real"), ARITHMETIC_MODELS.get("fp32")])
    assert fp32.certified["real"].all() and fp32.certified["fp32"].all()
    proto = threshold_net(True)
    onnx.save(proto, tmp_path / "int8.onnx")
    inside = np.linspace(0.54, 0.56, 201, dtype=np.float32).reshape(-1, 1)
    predicted = run_onnx(ort_session(tmp_path / "int8.onnx"), inside).argmax(1)
    assert (predicted == 1).any() and (predicted == 0).any()  # the flip is real: below 0.55 x rounds to 0.5
    int8 = certify_points(Engine(from_onnx(proto)), x, labels, eps, "inf", "crown",
                          [ARITHMETIC_MODELS.get("real"), INT8])
    assert not int8.certified["int8"].any() and not int8.certified["real"].any()
    assert int8.bounds["int8"][0, 1] < 0  # the lower bound of y_0 - y_1 admits the flip
    far = certify_points(Engine(from_onnx(proto)), np.array([[0.75]]), labels, eps, "inf", "crown", [INT8])
    assert far.certified["int8"].all()  # [0.74, 0.76] rounds to 0.7 or 0.8: class 0 throughout


def requantized_net() -> onnx.ModelProto:
    """x -> Q/DQ (1/255) -> Gemm (int8 weight 119 at scale s_w, int32 bias 0) -> Q/DQ (s_y): at x = 162/255 the
    exact value rounded is t = 162·119·(s_x·s_w)/s_y = 155.4999953 (to 155), while onnxruntime's fused QGemm
    multiplies by float32(float32(s_x·s_w)/s_y) and rounds exactly 155.5 (to 156, even): the float32 requantization
    changes a rounding decision."""
    s_x, s_w, s_y = np.float32(1 / 255), np.float32(0.007341437), np.float32(0.0035692134)
    inits = [numpy_helper.from_array(np.array(s_x, np.float32), "sx"), numpy_helper.from_array(np.uint8(0), "zx"),
             numpy_helper.from_array(np.array([[119]], np.int8), "wq"), numpy_helper.from_array(np.array([s_w]), "ws"),
             numpy_helper.from_array(np.zeros(1, np.int8), "wz"), numpy_helper.from_array(np.zeros(1, np.int32), "bq"),
             numpy_helper.from_array(np.array([s_x * s_w], np.float32), "bs"),
             numpy_helper.from_array(np.zeros(1, np.int32), "bz"),
             numpy_helper.from_array(np.array(s_y, np.float32), "sy"), numpy_helper.from_array(np.uint8(0), "zy")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["x"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["b"], axis=0),
             helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1),
             helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["out"])]
    graph = helper.make_graph(nodes, "requantized", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                                                   ["N", 1])],
                              [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["N", 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_rounding_the_fused_requantization_changes_stays_inside_the_bounds_by_the_window(tmp_path):
    proto = requantized_net()
    onnx.save(proto, tmp_path / "int8.onnx")
    x = np.array([[162 / 255]], np.float32)
    out = run_onnx(ort_session(tmp_path / "int8.onnx"), x).astype(np.float64)
    engine = Engine(from_onnx(proto))
    exact = engine.output(torch.from_numpy(x.astype(np.float64))).numpy()
    step = float(np.float32(0.0035692134))
    # onnxruntime rounds up where the exact function rounds down: one step apart, up to its float32 (q - z)·s
    assert abs(out[0, 0] - exact[0, 0] - step) <= 2.0 ** -24 * abs(out[0, 0])
    lo, hi = output_bounds(engine, x.astype(np.float64), 0.0)
    assert lo[0, 0] <= out[0, 0] <= hi[0, 0] and lo[0, 0] <= exact[0, 0] <= hi[0, 0]
    quantizer = next(n for n in engine.graph.nodes if n.op == "QuantizeLinear" and n.inputs[0] == "y")
    quantizer.attrs[WINDOW] = torch.zeros_like(quantizer.attrs[WINDOW])  # without it: the exact rounding only
    lo, hi = output_bounds(engine, x.astype(np.float64), 0.0)
    assert not lo[0, 0] <= out[0, 0] <= hi[0, 0]


# --- the rules themselves -----------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(scale=st.floats(2.0 ** -8, 4.0), zero=st.integers(0, 255), signed=st.booleans(),
       centre=st.floats(-300.0, 300.0), width=st.floats(0.0, 8.0), win=st.floats(0.0, 0.6), seed=st.integers(0, 99))
def test_the_quantizer_relaxation_and_interval_hold_every_rounding_in_the_window(scale, zero, signed, centre,
                                                                                   width, win, seed):
    """Any value within the window of x/s, rounded to nearest either way at a tie and saturated, lies between the
    lower and upper lines at x and inside the interval, for x anywhere in [l, u] (saturation edges and ties
    included: the centre is a multiple of s/2 half the time)."""
    from edgerobust.bounds.graph import Node

    s = torch.tensor(scale, dtype=torch.float64)
    z = torch.tensor(zero - 128 if signed else zero, dtype=torch.int8 if signed else torch.uint8)
    low, high = (-128, 127) if signed else (0, 255)
    node = Node("QuantizeLinear", ["x", "s", "z"], ["q"], {WINDOW: torch.tensor([[win]], dtype=torch.float64)}, "q",
                {"s": s, "z": z})
    rng = np.random.default_rng(seed)
    c = (round(centre * 2) / 2 if seed % 2 else centre) * scale
    l, u = c - width * scale / 2, c + width * scale / 2  # noqa: E741
    lo, hi = torch.tensor([[l]], dtype=torch.float64), torch.tensor([[u]], dtype=torch.float64)
    rule = QuantizeLinear()
    ls, lb, us, ub = (float(t) for t in rule.relaxation(node, lo, hi))
    q_lo, q_hi = (float(t) for t in rule.interval(node, (lo, hi)))
    xs = np.concatenate([[l, u, c], rng.uniform(l, u, 200)])
    for xv in xs:
        for tv in xv / scale + np.concatenate([rng.uniform(-win, win, 20), [-win, win]]):
            ties = {math.floor(tv), math.ceil(tv)} if tv - math.floor(tv) == 0.5 else {math.floor(tv + 0.5)}
            for r in ties:  # round to nearest, either way at a tie, then saturate
                y = min(max(r + int(z), low), high)
                assert q_lo <= y <= q_hi
                # the test's own float64 evaluation of the lines: a few roundings of their terms
                assert ls * xv + lb <= y + 2.0 ** -48 * (abs(ls * xv) + abs(lb) + 1)
                assert y <= us * xv + ub + 2.0 ** -48 * (abs(us * xv) + abs(ub) + 1)


def test_constant_dequantize_is_folded_into_exact_float64_weights_and_large_integers_are_refused():
    q = np.array([[-127, 5, 127], [3, -2, 0]], np.int8)
    scale = np.array([0.0123, 3.7e-5], np.float32)
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["W"], axis=0),
             helper.make_node("MatMul", ["input", "W"], ["out"])]
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale, "ws"),
                               numpy_helper.from_array(np.zeros(2, np.int8), "wz")])
    g = from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.op for n in g.nodes] == ["MatMul"]
    from fractions import Fraction
    for (i, j), v in np.ndenumerate(q):
        assert Fraction(float(g.consts["W"][i, j])) == Fraction(int(v)) * Fraction(float(scale[i]))
    big = np.array([2 ** 30], np.int32)
    nodes = [helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"]),
             helper.make_node("Add", ["input", "b"], ["out"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 1])],
                              [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["N", 1])],
                              [numpy_helper.from_array(big, "bq"), numpy_helper.from_array(np.float32(0.5), "bs")])
    with pytest.raises(BoundError, match="exactly in float64"):
        from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


# --- random small QDQ networks ------------------------------------------------------------------------------------

def small_net(seed: int, kind: str):
    torch.manual_seed(seed)
    if kind == "mlp":
        body, shape = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)), (1, 3, 4)
    elif kind == "conv":
        body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 3))
        shape = (2, 4, 4)
    else:  # a residual block and global average pooling: QLinearAdd and QLinearGlobalAveragePool
        class Res(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b, self.fc = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 3)

            def forward(self, x):
                h = torch.relu(self.a(x))
                h = torch.relu(h + self.b(h))
                return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))
        body, shape = Res(), (1, 4, 4)
    return NormalizedClassifier(body, [0.45] * shape[0], [0.3] * shape[0]).eval(), shape


def assert_onnxruntime_inside(engine, path, x, labels, eps, method, seed, lo, hi):
    """onnxruntime's outputs of the int8 artifact at x and 1,024 points of each L∞ ball stay inside the logit bounds
    (lo, hi) and violate no int8 margin certificate."""
    certs = certify_points(engine, x, labels, eps, "inf", method, [INT8])
    session = ort_session(path)
    for i in range(len(x)):
        points = np.concatenate([x[i:i + 1].astype(np.float32),
                                 *ball_batches(x[i].astype(np.float32), eps, "inf", 512, 512, seed, i)])
        out = run_onnx(session, points).astype(np.float64)
        assert (out >= lo[i]).all() and (out <= hi[i]).all()
        bound = [None if not np.isfinite(v) else float(v) for v in certs.bounds["int8"][i]]
        assert violations(out, int(labels[i]), bound)["violations"] == 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]),
       eps=st.sampled_from([0.0, 0.01, 0.05]), method=st.sampled_from(["ibp", "crown"]), reduce=st.booleans())
def test_random_qdq_networks_hold_onnxruntime_inside_their_bounds(tmp_path_factory, seed, kind, eps, method, reduce):
    """Tiny random torch models through the export's own quantizer (QDQ, per-channel int8 weights, uint8
    activations): onnxruntime's int8 outputs at points drawn in each ball and at its centre lie inside the bounds,
    and the margins' lower bounds hold for the engine's predicted class."""
    from edgerobust.export.quantize import Int8Settings

    model, shape = small_net(seed, kind)
    rng = np.random.default_rng(seed)
    proto = simplify(to_onnx(model, shape, 13))
    calibration = rng.random((32, *shape)).astype(np.float32)
    quantized = quantize_int8(proto, calibration, shape, Int8Settings(reduce_range=reduce))
    folder = tmp_path_factory.mktemp("qdq")
    onnx.save(quantized, folder / "int8.onnx")
    engine = Engine(from_onnx(quantized))
    x = rng.random((3, *shape))
    labels = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    lo, hi = output_bounds(engine, x, eps, method=method)
    assert_onnxruntime_inside(engine, folder / "int8.onnx", x, labels, eps, method, seed, lo, hi)


def tie_net(rng, hidden: int, exps: list[int], zero: int) -> onnx.ModelProto:
    """input [N, 4] -> Q/DQ -> Gemm (int8 weights, per-channel power-of-two scales, int32 bias at s_x·s_w) -> Q/DQ
    (zero point `zero`) -> Gemm -> Q/DQ: every scale a power of two, so requantization is exact in float32 and
    values fall on ties k + 1/2 often, where any rounding to nearest may go either way."""
    s_in, s_h, s_out = 2.0 ** -exps[0], 2.0 ** -exps[1], 2.0 ** -exps[2]
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(value, name))
        return name

    def qdq(src, scale, zp, name):
        const(f"{name}_s", np.array(scale, np.float32)), const(f"{name}_z", np.array(zp, np.uint8))
        nodes.append(helper.make_node("QuantizeLinear", [src, f"{name}_s", f"{name}_z"], [f"{name}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name]))
        return name

    def gemm(src, s_x, rows, cols, name):
        w_exp = rng.integers(5, 9, rows)
        const(f"{name}_wq", rng.integers(-127, 128, (rows, cols)).astype(np.int8))
        const(f"{name}_ws", (2.0 ** -w_exp).astype(np.float32)), const(f"{name}_wz", np.zeros(rows, np.int8))
        const(f"{name}_bq", rng.integers(-2000, 2000, rows).astype(np.int32))
        const(f"{name}_bs", (s_x * 2.0 ** -w_exp).astype(np.float32)), const(f"{name}_bz", np.zeros(rows, np.int32))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_wq", f"{name}_ws", f"{name}_wz"], [f"{name}_w"],
                                      axis=0))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_bq", f"{name}_bs", f"{name}_bz"], [f"{name}_b"],
                                      axis=0))
        nodes.append(helper.make_node("Gemm", [src, f"{name}_w", f"{name}_b"], [name], transB=1))
        return name

    h = qdq(gemm(qdq("input", s_in, 0, "x"), s_in, hidden, 4, "g1"), s_h, zero, "h")
    qdq(gemm(h, s_h, 3, hidden, "g2"), s_out, 128, "logits")
    nodes[-1].output[0] = "out"
    graph = helper.make_graph(nodes, "ties", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), hidden=st.integers(2, 6), exps=st.lists(st.integers(3, 8), min_size=3, max_size=3),
       zero=st.sampled_from([0, 7, 128]), eps=st.sampled_from([0.0, 2.0 ** -7, 0.03]),
       method=st.sampled_from(["ibp", "crown"]))
def test_qdq_networks_on_ties_hold_onnxruntime_inside_their_bounds(tmp_path_factory, seed, hidden, exps, zero, eps,
                                                                  method):
    rng = np.random.default_rng(seed)
    proto = tie_net(rng, hidden, exps, zero)
    path = tmp_path_factory.mktemp("ties") / "int8.onnx"
    onnx.save(proto, path)
    engine = Engine(from_onnx(proto))
    x = np.round(rng.random((4, 4)) * 64) / 64  # on the input grid (ties of the input quantizer included)
    lo, hi = output_bounds(engine, x, eps, method=method)
    session = ort_session(path)
    for i in range(len(x)):
        points = np.concatenate([x[i:i + 1].astype(np.float32),
                                 *ball_batches(x[i].astype(np.float32), eps, "inf", 256, 256, seed, i)])
        out = run_onnx(session, points).astype(np.float64)
        assert (out >= lo[i]).all() and (out <= hi[i]).all()


# --- on the aarch64 test bed ---------------------------------------------------------------------------------------

ARM64_INT8_PROFILE = """name = "arm64-int8"
description = "the aarch64 test bed with onnxruntime's QDQ int8 (emulated: timings mean nothing)"
arch = "aarch64"
accelerator = "cpu"
runtimes = ["ort-cpu"]
precisions = ["fp32", "int8"]
max_opset = 13
memory_budget = "2 GiB"
python = "3.6"
threads = 1

[int8]
runtime = "ort"
reduce_range = false
method = "minmax"
"""


@pytest.mark.arm64
@pytest.mark.timeout(3600)
def test_int8_certified_balls_hold_on_aarch64_outputs(edge_run, edge_profiles, arm64_host, tmp_path):
    """The aarch64 onnxruntime's own int8 outputs (NEON integer kernels, fixed-point QLinearAdd) inside the balls the
    host certified for the int8 artifact (a few hundred points per ball: every runner start costs ~20 s emulated)."""
    from dataclasses import replace

    from edgerobust.certify.api import certify_bundle
    from edgerobust.config import DeviceConfig
    from edgerobust.export.api import export_run
    from edgerobust.remote.certify_check import device_certify_check
    from edgerobust.run import RunDir

    (edge_profiles / "arm64-int8.toml").write_text(ARM64_INT8_PROFILE)
    shutil.copytree(edge_run.path, tmp_path / "run", ignore=shutil.ignore_patterns("export-*", "device"))
    run = RunDir.open(tmp_path / "run")
    export_run(run, ExportConfig(target="arm64-int8", calibration=64, golden=32), progress=False)
    doc = certify_bundle(run.bundle("arm64-int8"), [0.01], method="crown", n=4, radius=False, run=run,
                         precisions=["int8"])
    assert any(r["certified_accuracy"] > 0 for r in doc["artifacts"][0]["rows"] if r["arithmetic"] == "int8")
    config = DeviceConfig(host=arm64_host.alias, python="python3", root=".edgerobust-test",
                          ssh_config=str(arm64_host.ssh_config), timeout=1800, connect_timeout=120)
    out = device_certify_check(run, replace(config, target="arm64-int8", name="arm64"), samples=300, progress=False)
    print("arm64 int8 certify check:", [(r["precision"], r["arithmetic"], r["certified_points"], r["checked_outputs"],
                                         r["violations"]) for r in out["rows"]])
    assert out["complete"] and [(r["precision"], r["arithmetic"]) for r in out["rows"]] == [("int8", "int8")]
    row = out["rows"][0]
    assert row["certified_points"] > 0 and row["record"]["architecture"] == "aarch64"
    assert out["violations"] == 0, row["violating_points"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["conv", "res"]), which=st.sampled_from(["auto", "first"]),
       eps=st.sampled_from([0.0, 0.02]), method=st.sampled_from(["ibp", "crown"]))
@example(seed=1, kind="res", which="auto", eps=0.0, method="ibp")  # onnxruntime requantized the float layer (below)
def test_partially_quantized_networks_hold_onnxruntime_inside_their_bounds(tmp_path_factory, seed, kind, which, eps,
                                                                           method):
    """Mixed precision (export --int8-exclude): convolutions left in float32 between a DequantizeLinear and a
    QuantizeLinear are float segments of the int8 model; onnxruntime's outputs of the partially quantized graph lie
    inside the bounds and the margins' lower bounds hold."""
    from edgerobust.export.quantize import Int8Settings, float_operators

    model, shape = small_net(seed, kind)
    rng = np.random.default_rng(seed)
    proto = simplify(to_onnx(model, shape, 13))
    exclude = "auto" if which == "auto" else next(n.name for n in proto.graph.node if n.op_type == "Conv")
    calibration = rng.random((32, *shape)).astype(np.float32)
    quantized = quantize_int8(proto, calibration, shape, Int8Settings(exclude=exclude))
    floats = float_operators(quantized)
    assert floats and any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    folder = tmp_path_factory.mktemp("mixed")
    onnx.save(quantized, folder / "int8.onnx")
    engine = Engine(from_onnx(quantized))
    x = rng.random((3, *shape))
    labels = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    lo, hi = output_bounds(engine, x, eps, method=method)
    assert np.isfinite(lo).all() and np.isfinite(hi).all()  # every QuantizeLinear has its window: not vacuous
    assert_onnxruntime_inside(engine, folder / "int8.onnx", x, labels, eps, method, seed, lo, hi)


def test_a_float_layer_reads_the_float_tensor_and_onnxruntime_keeps_it_float(monkeypatch, tmp_path):
    """A float Conv fed by a per-tensor DequantizeLinear is quantized by onnxruntime's own optimiser from 1.20 on
    (WeightBiasQuantization), so the exclusion would depend on the runtime's version: the export feeds the float
    layer the tensor before the QuantizeLinear -> DequantizeLinear pair, onnxruntime keeps it a float convolution,
    and the engine refuses the old wiring instead of certifying an arithmetic that may not run."""
    import onnxruntime as ort

    import edgerobust.export.quantize as quantize
    from edgerobust.export.quantize import Int8Settings, float_operators

    model, shape = small_net(1, "res")  # the second convolution (3 channels) reads the quantized block input
    rng = np.random.default_rng(1)
    proto = simplify(to_onnx(model, shape, 13))
    calibration = rng.random((32, *shape)).astype(np.float32)
    quantized = quantize_int8(proto, calibration, shape, Int8Settings(exclude="auto"))
    floats = float_operators(quantized)
    producers = {out: n.op_type for n in quantized.graph.node for out in n.output}
    conv_inputs = {n.name: producers.get(n.input[0]) for n in quantized.graph.node if n.name in floats}
    assert conv_inputs == {"/net/a/Conv": "Div", "/net/b/Conv": "Relu"}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # QDQ fusions, no layouts
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert sum(op in ("Conv", "FusedConv") for op in ops) == 2 and "QLinearConv" not in ops, ops

    monkeypatch.setattr(quantize, "feed_float_operators", lambda graph: None)  # the wiring of older exports
    old = quantize_int8(proto, calibration, shape, Int8Settings(exclude="auto"))
    with pytest.raises(BoundError, match="Conv /net/b/Conv: a float32 layer reading a DequantizeLinear"):
        output_bounds(Engine(from_onnx(old)), rng.random((1, *shape)), 0.0, method="ibp")
