"""Bound and error rules for what non-ReLU activations lower to (Exp, Sigmoid, Tanh, Erf, Softplus, Elu, the product
of two computed tensors), and models with those activations exporting with a derived golden tolerance."""
from __future__ import annotations

import math
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from scipy.special import erf, erfc, expit

from edgerobust.bounds import ARITHMETIC_MODELS, Ball, BoundError, Engine, from_onnx
from edgerobust.bounds.rules import RULES
from edgerobust.bounds.rules.smooth import FUNCTION_ULPS
from edgerobust.config import ExportConfig
from edgerobust.export.api import export_run
from edgerobust.export.bundle import read_manifest, verify_bundle
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.export.tolerance import float64_outputs, golden_tolerances
from edgerobust.models import build_model
from edgerobust.models.activations import parse_activation, swap_activations
from edgerobust.run import RunDir

# float64 references independent of torch (scipy / numpy)
REFERENCE = {"Gelu": lambda x: x * erfc(-x / np.sqrt(2)) / 2, "Exp": np.exp, "Sigmoid": expit, "Tanh": np.tanh,
             "Erf": erf, "Softplus": lambda x: np.logaddexp(0, x),
             "Elu": lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))}
CASES = [("Gelu", {}), ("Exp", {}), ("Sigmoid", {}), ("Tanh", {}), ("Erf", {}), ("Softplus", {}), ("Elu", {}),
         ("Elu", {"alpha": 0.5}), ("Elu", {"alpha": 1.5})]
F64 = 2.0 ** -40  # torch and scipy float64 special functions agree to this (erfc deep in its tail: ~5e-14), far
# inside the engine's own rounding allowance SLACK = 2^-30


def one_op_graph(op: str, attrs: dict, dtype=TensorProto.FLOAT, two_inputs: bool = False) -> onnx.ModelProto:
    """y = op(x) (or x·tanh(x) for the product: two computed operands), as a model with one input and output."""
    nodes = [helper.make_node(op, ["x"], ["y"], **attrs)] if not two_inputs else [
        helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Mul", ["x", "t"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, ["n", 64])],
                              [helper.make_tensor_value_info("y", dtype, ["n", 64])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20 if op == "Gelu" else 13)])


def reference(op, attrs, x):
    return REFERENCE[op](x, **attrs) if attrs else REFERENCE[op](x)


def intervals(seed: int, n: int = 512):
    """Random [l, u] of every width from 0 to 40 around centres in [-15, 15]."""
    g = torch.Generator().manual_seed(seed)
    centre = (torch.rand(n, 64, generator=g, dtype=torch.float64) - 0.5) * 30
    width = torch.rand(n, 64, generator=g, dtype=torch.float64) ** 3 * 40
    width[: n // 8] = 0.0  # points (the ε = 0 case)
    return centre - width / 2, centre + width / 2


def samples(lo, hi, seed, k=16):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(k, *lo.shape, generator=g, dtype=torch.float64)
    t[0], t[1] = 0.0, 1.0  # the ends
    return lo + t * (hi - lo)


@pytest.mark.parametrize("op,attrs", CASES)
def test_forward_is_the_onnx_definition(op, attrs):
    node = from_onnx(one_op_graph(op, attrs)).nodes[0]
    x = torch.linspace(-40, 40, 100_001, dtype=torch.float64)
    ours = RULES.get(op).forward(node, x).numpy()
    exact = reference(op, attrs, x.numpy())
    assert np.all(np.abs(ours - exact) <= 8 * F64 * np.abs(exact) + 1e-300)


@pytest.mark.parametrize("op,attrs", CASES)
def test_interval_and_crown_relaxation_contain_the_function(op, attrs):
    node = from_onnx(one_op_graph(op, attrs)).nodes[0]
    rule = RULES.get(op)
    lo, hi = intervals(0)
    ilo, ihi = rule.interval(node, (lo, hi))
    x = samples(lo, hi, 1)
    y = torch.from_numpy(reference(op, attrs, x.numpy()))
    assert bool((y >= ilo).all()) and bool((y <= ihi).all())
    # A·f(x) >= a_in·x + bias for A of either sign, at every sample (S = 2 specs: +1 and -1 per element)
    A = torch.stack([torch.ones_like(lo), -torch.ones_like(lo)])  # [S = 2, B, 64]
    (a_in,), _, _ = rule.backward(node, A, (lo, hi))
    ls, lb, us, ub = rule._relaxation(node, lo, hi)
    assert bool((y >= ls * x + lb).all()) and bool((y <= us * x + ub).all())
    assert torch.equal(a_in[0], ls) and torch.equal(a_in[1], -us)
    # on intervals of moderate width the linear bounds are tighter on average than IBP's constants (ELU with
    # α > 1, neither convex nor C², keeps the constants)
    moderate = ((hi - lo) > 0.01) & ((hi - lo) < 1)
    linear, constant = (us * x + ub - ls * x - lb)[:, moderate].mean(), (ihi - ilo)[moderate].mean()
    assert linear < constant if rule.convex(node) or rule.curvature is not None else linear <= constant * (1 + 1e-6)


def test_elu_with_a_negative_alpha_is_refused():
    node = from_onnx(one_op_graph("Elu", {"alpha": -1.0})).nodes[0]
    with pytest.raises(BoundError, match="non-monotone"):
        RULES.get("Elu").forward(node, torch.zeros(1, 64, dtype=torch.float64))


@pytest.mark.parametrize("op,attrs", CASES)
@pytest.mark.parametrize("precision,dtype,npdtype", [("fp32", TensorProto.FLOAT, np.float32),
                                                     ("fp16", TensorProto.FLOAT16, np.float16)])
def test_error_bound_covers_onnxruntime(op, attrs, precision, dtype, npdtype):
    """The library assumption (FUNCTION_ULPS) and the propagation, checked on the runtime at hand: an input that
    carries an error e (the same values perturbed) stays within the bound of the exact output."""
    proto = one_op_graph(op, attrs, dtype)
    engine = Engine(from_onnx(proto), what="error")
    x = np.concatenate([np.linspace(-12, 12, 64 * 64), np.random.default_rng(0).normal(0, 4, 64 * 64)])
    x = x.astype(npdtype).astype(np.float64).reshape(-1, 64)  # exactly representable inputs
    exact = torch.from_numpy(x)
    e_in = np.abs(x) * 2.0 ** -12 + 2.0 ** -20  # a perturbation the bound must carry through f
    perturbed = (x + np.where(np.arange(x.size).reshape(x.shape) % 2, e_in, -e_in)).astype(npdtype)
    e_in = np.abs(perturbed.astype(np.float64) - x)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    computed = session.run(None, {"x": perturbed})[0].astype(np.float64)
    ar = ARITHMETIC_MODELS.get(precision)
    node, rule = engine.graph.nodes[0], engine.rules[0]
    lo, hi = exact - torch.from_numpy(e_in), exact + torch.from_numpy(e_in)
    bound = rule.error_in(node, ar, [(lo, hi)], [exact.abs() + torch.from_numpy(e_in)], [torch.from_numpy(e_in)])
    truth = reference(op, attrs, x)
    ok = np.abs(truth) < (6e4 if npdtype is np.float16 else 3e38)
    assert np.all((np.abs(computed - truth) <= bound.numpy())[ok])
    assert FUNCTION_ULPS >= 8  # the margin the module docstring documents over the measured accuracy


def test_product_of_two_computed_tensors():
    proto = one_op_graph("Mul", {}, two_inputs=True)
    engine = Engine(from_onnx(proto))
    mul_node, mul = engine.graph.nodes[1], engine.rules[1]
    assert mul.nonlinear_at(mul_node) and not mul.nonlinear
    lx, ux = intervals(2)
    ly, uy = intervals(3)
    x, y = samples(lx, ux, 4), samples(ly, uy, 5)
    lo, hi = mul.interval(mul_node, (lx, ux), (ly, uy))
    assert bool((x * y >= lo).all()) and bool((x * y <= hi).all())
    A = torch.randn(3, *lx.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (ax, ay), bias, _ = mul.backward(mul_node, A, (lx, ux), (ly, uy))
    for i in range(x.shape[0]):
        exact = (A * (x[i] * y[i])).sum(-1)
        linear = (ax * x[i]).sum(-1) + (ay * y[i]).sum(-1) + bias
        assert bool((exact >= linear - 1e-9 * (A.abs() * (x[i] * y[i]).abs()).sum(-1)).all())
    # a ball: CROWN's output bounds contain x·tanh(x) at sampled points, and are tighter than IBP's somewhere
    centre = torch.rand(8, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    ball = Ball(centre, 0.2)
    crown, ibp = engine.bounds(ball, "crown")[engine.graph.output], engine.bounds(ball, "ibp")[engine.graph.output]
    points = samples(*ball.box(), 8)
    for p in points:
        out = engine.output(p)
        assert bool((out >= crown[0]).all()) and bool((out <= crown[1]).all())
    assert bool(((crown[1] - crown[0]) <= (ibp[1] - ibp[0])).all())
    # the error of a product: fp32 onnxruntime within the bound
    ar = ARITHMETIC_MODELS.get("fp32")
    x32 = (np.random.default_rng(8).normal(0, 3, (64, 64))).astype(np.float32)
    values = engine.forward(torch.from_numpy(x32.astype(np.float64)))
    errors = engine.errors({k: v.abs() for k, v in values.items()}, ar, {k: (v, v) for k, v in values.items()})
    computed = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x32})[0].astype(np.float64)
    truth = x32.astype(np.float64) * np.tanh(x32.astype(np.float64))
    assert np.all(np.abs(computed - truth) <= errors[engine.graph.output].numpy())


ACTIVATIONS = ["elu", "swish", "gelu", "softplus", "kaf"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_a_network_with_the_activation_has_sound_bounds(activation):
    """Golden tolerance finite in fp32 and covering onnxruntime; CROWN's bounds contain sampled outputs."""
    torch.manual_seed(0)
    model = build_model("scnn2:4-8", (1, 8, 8), 10, mean=[0.5], std=[0.25], activation=activation).eval()
    proto = simplify(to_onnx(model, (1, 8, 8), 13))
    x = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
    tolerance = golden_tolerances(proto, x, ["fp32"], reference=float64_outputs(model, x))["fp32"]
    assert tolerance is not None and np.all(np.isfinite(tolerance))
    computed = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0].astype(np.float64)
    golden = model(torch.from_numpy(x)).detach().double().numpy()
    assert np.all(np.abs(computed - golden) <= tolerance)
    engine = Engine(from_onnx(proto))
    ball = Ball(torch.from_numpy(x[:2].astype(np.float64)), 1 / 255)
    with torch.no_grad():  # CROWN through a KAF's 240 nonlinear nodes per layer takes minutes: IBP there
        lo, hi = engine.bounds(ball, "ibp" if activation == "kaf" else "crown")[engine.graph.output]
        for p in samples(*ball.box(), 9, k=6):
            out = engine.output(p)
            assert bool((out >= lo).all()) and bool((out <= hi).all())
    assert math.isfinite(float((hi - lo).max()))


@pytest.fixture(scope="module")
def swapped_runs(digits_run, tmp_path_factory):
    """The shared digits run with its ReLUs swapped (other weights kept), one run per activation."""
    runs = {}
    swaps = {**{a: a for a in ACTIVATIONS}, "kwta": "kwta"}
    for key, activation in swaps.items():
        path = tmp_path_factory.mktemp("swapped") / key
        shutil.copytree(digits_run.path, path)
        run = RunDir.open(path)
        model = swap_activations(run.load_model(), activation, run.input_shape)
        run.save_model(model, {**run.manifest["model"], "activation": parse_activation(activation)})
        runs[key] = run
    return runs


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_export_and_verify_with_a_derived_tolerance(swapped_runs, activation):
    run = swapped_runs[activation]
    result = export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=16), progress=False)
    manifest = read_manifest(result.bundle)
    tolerance = np.load(result.bundle / "golden_tolerance.fp32.npy")
    assert tolerance.shape == (16, 10) and np.all(np.isfinite(tolerance)) and np.all(tolerance > 0)
    assert manifest["models"]["fp32"]["parity"]["top1_agreement"] == 1.0
    report = verify_bundle(result.bundle, run_golden=True)
    assert report["sha256"] == "ok" and report["golden"]["fp32"]["passed"] and report["golden"]["fp32"]["bounded"]


@pytest.mark.parametrize("activation", ["kaf", "swish"])
def test_jetson_nano_bundle_for_kaf_and_swish(swapped_runs, activation, tmp_path):
    """Opset 13 and fp16 (the issue's aarch64 target): standard operators, fp16 parity, verified."""
    run = swapped_runs[activation]
    result = export_run(run, ExportConfig(target="jetson-nano", calibration=0, golden=16), out=tmp_path / "b",
                        progress=False)
    ops = {n.op_type for n in onnx.load(result.bundle / "model.onnx").graph.node}
    assert ops <= {"Sub", "Div", "Conv", "Mul", "Exp", "Add", "Sigmoid", "Flatten", "Gemm"}
    report = verify_bundle(result.bundle, run_golden=True)
    assert report["golden"]["fp32"]["passed"] and report["golden"]["fp16"]["passed"]


def test_a_square_is_known_non_negative_and_relaxed_soundly():
    """x·x of one tensor (KAF's (x - d)²): the interval never goes below 0, the tangent/chord relaxation holds."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])])
    engine = Engine(from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])))
    node, rule = engine.graph.nodes[0], engine.rules[0]
    lo, hi = intervals(9)
    ilo, ihi = rule.interval(node, (lo, hi), (lo, hi))
    x = samples(lo, hi, 10)
    assert bool((ilo >= 0).all()) and bool((x * x >= ilo).all()) and bool((x * x <= ihi).all())
    assert bool((ilo[(lo < 0) & (hi > 0)] == 0).all())
    A = torch.stack([torch.ones_like(lo), -torch.ones_like(lo)])
    (a1, a2), bias, _ = rule.backward(node, A, (lo, hi), (lo, hi))
    for p in x:
        assert bool((A * p * p).sum(-1).ge((a1 * p).sum(-1) + (a2 * p).sum(-1) + bias - 1e-9 * (p * p).sum(-1)).all())


def test_kwta_export_is_refused_naming_the_operators(swapped_runs, tmp_path):
    """k-winners-take-all traces (TopK) but has no error rule: one clear line, no bundle."""
    from edgerobust.errors import EdgeRobustError

    with pytest.raises(EdgeRobustError, match="TopK have no error rule"):
        export_run(swapped_runs["kwta"], ExportConfig(target="x86-cpu", calibration=0, golden=4), out=tmp_path / "b",
                   progress=False)
    assert not (tmp_path / "b").exists()
