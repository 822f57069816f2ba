"""LRN, LpPool and GlobalLpPool in the bound engine (imported ONNX graphs), their Lipschitz bounds and Peck's rules.

Soundness is checked against what runs: onnxruntime's fp32 outputs stay within the derived error bound of the
engine's float64 function, and sampled points of a ball stay inside its IBP and CROWN bounds.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgerobust.bounds import Ball, Engine, from_onnx
from edgerobust.certify.lipschitz import operator_norm
from edgerobust.certify.peck import peck_bounds, violations
from edgerobust.export.tolerance import exact_outputs, forward_error_bound

SHAPE = (3, 6, 6)


def lrn_net(seed: int, size: int = 3, beta: float = 0.75, alpha: float = 0.5, bias: float = 1.0, p: int = 2,
            pool: str = "LpPool", classes: int = 4, scale: float = 1.0) -> onnx.ModelProto:
    """Conv -> Relu -> LRN -> (Global)LpPool -> Flatten -> Gemm, random weights (AlexNet's layer order)."""
    rng = np.random.default_rng(seed)
    channels = 5
    w = (rng.normal(size=(channels, SHAPE[0], 3, 3)) * scale).astype(np.float32)
    b = rng.normal(size=channels).astype(np.float32) * 0.1
    pooled = channels * (9 if pool == "LpPool" else 1)
    fc = rng.normal(size=(classes, pooled)).astype(np.float32) / math.sqrt(pooled)
    fb = rng.normal(size=classes).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(v, n) for v, n in ((w, "w"), (b, "b"), (fc, "fc"), (fb, "fb"))]
    pooling = (helper.make_node("LpPool", ["n"], ["p"], kernel_shape=[2, 2], strides=[2, 2], p=p)
               if pool == "LpPool" else helper.make_node("GlobalLpPool", ["n"], ["p"], p=p))
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("LRN", ["r"], ["n"], size=size, alpha=alpha, beta=beta, bias=bias),
             pooling,
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["output"], transB=1)]
    graph = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           ["N", *SHAPE])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def single(op: str, shape: tuple[int, ...], **attrs) -> onnx.ModelProto:
    """A graph of one operator (its output is the graph's)."""
    node = helper.make_node(op, ["input"], ["output"], **attrs)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def ort_outputs(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.astype(np.float32)})[0].astype(np.float64)


# onnxruntime's LRN takes odd sizes only; the engine follows ONNX's definition for even ones too (EVEN)
CONFIGS = [dict(size=3, beta=0.75, p=2, pool="LpPool"), dict(size=1, beta=0.4, p=1, pool="LpPool"),
           dict(size=5, beta=1.5, p=3, pool="GlobalLpPool"), dict(size=7, beta=0.75, p=2, pool="GlobalLpPool")]
EVEN = [dict(size=4, beta=0.4, p=1, pool="LpPool"), dict(size=2, beta=0.75, p=2, pool="GlobalLpPool")]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_onnxruntime_stays_within_the_fp32_error_bound_of_the_exact_function(config):
    """Also pins ONNX's semantics (the channel window, p, zero padding): the engine's float64
    function is what onnxruntime computes, within a bound derived from the arithmetic, not a tuned tolerance."""
    proto = lrn_net(1, **config, scale=2.0)
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(0, 1, (16, *SHAPE)), rng.uniform(0, 4, (4, *SHAPE))]).astype(np.float32)
    exact = exact_outputs(proto, x)
    bound = forward_error_bound(proto, x, "fp32")
    gap = np.abs(ort_outputs(proto, x) - exact)
    assert bound is not None and np.all(gap <= bound)
    assert np.all(bound < 1e-2 * (1 + np.abs(exact)))  # and the bound says something (worst case: γ_n·Σ|w||x|)


@pytest.mark.parametrize("op, attrs", [("LRN", dict(size=3, alpha=0.9, beta=0.75, bias=0.5)),
                                       ("LpPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], p=3)),
                                       ("GlobalLpPool", dict(p=1))])
def test_each_operator_alone_matches_onnxruntime_within_its_error_term(op, attrs):
    proto = single(op, (4, 5, 5), **attrs)
    x = np.random.default_rng(3).normal(scale=3.0, size=(8, 4, 5, 5)).astype(np.float32)
    gap = np.abs(ort_outputs(proto, x) - exact_outputs(proto, x))
    assert np.all(gap <= forward_error_bound(proto, x, "fp32"))


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_bounds_at_eps_zero_equal_the_forward_pass(config):
    engine = Engine(from_onnx(lrn_net(4, **config)))
    x = torch.from_numpy(np.random.default_rng(5).uniform(0, 1, (3, *SHAPE)))
    out = engine.output(x)
    for method in ("ibp", "crown"):
        lo, hi = engine.bounds(Ball(x, 0.0), method)[engine.graph.output]
        assert torch.all(lo <= out) and torch.all(out <= hi)
        assert torch.all(hi - lo <= 1e-6 * (1 + out.abs()))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), config=st.sampled_from(CONFIGS + EVEN), eps=st.sampled_from([0.01, 0.05, 0.2]))
def test_no_sampled_point_escapes_the_bounds_and_crown_is_never_looser(seed, config, eps):
    engine = Engine(from_onnx(lrn_net(seed, **config, scale=1.5)))
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (2, *SHAPE))
    ball = Ball(torch.from_numpy(x), eps)
    ibp = engine.bounds(ball, "ibp")[engine.graph.output]
    crown = engine.bounds(ball, "crown")[engine.graph.output]
    assert torch.all(crown[0] >= ibp[0]) and torch.all(crown[1] <= ibp[1])
    labels = torch.tensor([0, 1])
    margins, _ = engine.margins(ball, labels, "crown")
    margins[torch.arange(2), labels] = -math.inf  # y_label - y_label = 0: no bound to check
    for i in range(2):
        d = rng.uniform(-eps, eps, (600, *SHAPE))
        d[:150] = np.sign(d[:150]) * eps  # corners
        points = torch.from_numpy(np.clip(x[i] + d, 0, 1))
        out = engine.output(points)
        assert torch.all(out >= crown[0][i]) and torch.all(out <= crown[1][i])
        gap = out[:, labels[i]].unsqueeze(1) - out
        assert torch.all(gap >= margins[i])


@settings(max_examples=25, deadline=None)
@given(lo=st.floats(-4, 4), width=st.floats(0, 6), neighbour=st.floats(0, 3), beta=st.sampled_from([0.3, 0.75, 2.0]))
def test_the_lrn_interval_is_sound_and_tight_through_its_peak(lo, width, neighbour, beta):
    """One channel's interval with a fixed neighbour: sound at every point of a fine grid and attained by it (the
    largest |y| may be inside [l, u], at the peak t* of t·(b + a t²)^-β)."""
    engine = Engine(from_onnx(single("LRN", (2, 1, 1), size=3, alpha=1.5, beta=beta, bias=1.0)))
    hi = lo + width
    box = (torch.tensor([[[[lo]], [[neighbour]]]], dtype=torch.float64),
           torch.tensor([[[[hi]], [[neighbour]]]], dtype=torch.float64))
    y_lo, y_hi = engine.rules[0].interval(engine.graph.nodes[0], box)
    t = torch.linspace(lo, hi, 20001, dtype=torch.float64)
    grid = torch.stack([t, torch.full_like(t, neighbour)], 1).reshape(-1, 2, 1, 1)
    y = engine.output(grid)[:, 0, 0, 0]
    assert float(y.min()) >= float(y_lo[0, 0]) and float(y.max()) <= float(y_hi[0, 0])
    slack = 1e-6 * (1 + float(y.abs().max()))
    assert float(y.min()) - float(y_lo[0, 0]) <= slack and float(y_hi[0, 0]) - float(y.max()) <= slack


@pytest.mark.parametrize("op, attrs, shape", [
    ("LRN", dict(size=5, alpha=2.0, beta=0.75, bias=0.5), (6, 2, 2)),
    ("LRN", dict(size=2, alpha=4.0, beta=0.3, bias=1.0), (4, 2, 2)),
    ("LpPool", dict(kernel_shape=[3, 3], strides=[1, 1], p=1), (2, 5, 5)),
    ("LpPool", dict(kernel_shape=[2, 2], strides=[2, 2], p=2), (2, 4, 4)),
    ("GlobalLpPool", dict(p=1), (2, 3, 3))])
def test_the_lipschitz_bound_holds_where_the_jacobian_is_largest(op, attrs, shape):
    """‖J(x)‖₂ <= the operator-norm bound at random points and after gradient ascent on ‖J(x)v‖."""
    engine = Engine(from_onnx(single(op, shape, **attrs)))
    bound = operator_norm(engine, 0, shape)
    rng = np.random.default_rng(0)
    worst = 0.0
    for scale in (0.3, 1.0, 3.0):
        x = torch.from_numpy(rng.normal(scale=scale, size=(1, *shape))).requires_grad_(True)
        for _ in range(12):
            jac = torch.autograd.functional.jacobian(lambda v: engine.output(v).flatten(), x, create_graph=True)
            norm = torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1), ord=2)
            worst = max(worst, float(norm.detach()))
            (grad,) = torch.autograd.grad(norm, x)
            with torch.no_grad():
                x += 0.2 * scale * grad / grad.norm().clamp_min(1e-12)
    assert worst <= bound
    assert worst >= bound / 10  # not vacuous


def test_peck_both_modes_run_on_an_lrn_network_and_the_sound_mode_has_no_violation():
    engine = Engine(from_onnx(lrn_net(7, size=5, beta=0.75, alpha=1.0, bias=2.0, scale=2.0)))
    x = np.random.default_rng(8).uniform(0, 1, (6, *SHAPE))
    predicted = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    sound = peck_bounds(engine, x, predicted, "sound")
    thesis = peck_bounds(engine, x, predicted, "thesis")
    assert np.all(np.isfinite(sound)) and np.all(sound > 0)
    assert np.all(np.isfinite(thesis)) and np.all(thesis >= 0)
    # the sound bound is below the distance to the nearest flip along random rays (a perturbation that flips)
    rng = np.random.default_rng(9)
    found = np.full(len(x), np.inf)
    radii = np.geomspace(1e-3, 20, 60)
    for i in range(len(x)):
        v = rng.normal(size=(40, 1, *SHAPE))
        v /= np.linalg.norm(v.reshape(40, -1), axis=1).reshape(40, 1, 1, 1, 1)
        points = x[i] + radii.reshape(1, -1, 1, 1, 1) * v  # [ray, radius, *SHAPE]
        flips = engine.output(torch.from_numpy(points.reshape(-1, *SHAPE))).argmax(1).numpy() != predicted[i]
        hit = flips.reshape(40, len(radii))
        if hit.any():
            found[i] = radii[hit.argmax(1)[hit.any(1)]].min()
    assert violations(sound, found)["violations"] == 0


def test_bad_lrn_and_lppool_attributes_are_one_line():
    from edgerobust.bounds.graph import BoundError

    for op, attrs in (("LRN", dict(size=3, bias=0.0)), ("LRN", dict(size=3, beta=-0.5)),
                      ("LpPool", dict(kernel_shape=[2, 2], p=0))):
        engine = Engine(from_onnx(single(op, (2, 4, 4), **attrs)))
        with pytest.raises(BoundError) as info:
            engine.bounds(Ball(torch.zeros((1, 2, 4, 4), dtype=torch.float64), 0.1), "crown")
        assert "\n" not in str(info.value) and op in str(info.value)


def lrn_head(seed: int, channels: int = 4, classes: int = 3) -> Engine:
    """LRN (size 3, α 1, β 0.75, bias 1) -> Flatten -> Gemm on [channels, 1, 1] inputs."""
    rng = np.random.default_rng(seed)
    fc = rng.normal(size=(classes, channels)).astype(np.float32)
    fb = (rng.normal(size=classes) * 0.1).astype(np.float32)
    nodes = [helper.make_node("LRN", ["input"], ["n"], size=3, alpha=1.0, beta=0.75, bias=1.0),
             helper.make_node("Flatten", ["n"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["output"], transB=1)]
    graph = helper.make_graph(nodes, "lrn-head", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["N", channels, 1, 1])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes])],
                              [numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(fb, "fb")])
    return Engine(from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])))


def test_thesis_lrn_bound_thm_5_9_is_violated_and_the_sound_one_holds():
    """Thm 5.9 takes max_a λ_a where min_a is needed (and Lemma 5.11's M misses mixed derivatives): a perturbation
    shorter than the thesis's κ flips the prediction; the sound (Lipschitz) bound stays below it."""
    engine = lrn_head(1)
    rng = np.random.default_rng(1001)
    x = rng.uniform(0, 1, (8, 4, 1, 1))
    predicted = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    thesis = peck_bounds(engine, x, predicted, "thesis")
    sound = peck_bounds(engine, x, predicted, "sound")
    radii = np.geomspace(1e-4, 5, 200)
    rays = rng.normal(size=(400, 1, 4, 1, 1))
    rays /= np.linalg.norm(rays.reshape(400, -1), axis=1).reshape(400, 1, 1, 1, 1)
    broken = 0
    for i in range(len(x)):
        points = x[i] + radii.reshape(1, -1, 1, 1, 1) * rays
        flips = (engine.output(torch.from_numpy(points.reshape(-1, 4, 1, 1))).argmax(1).numpy()
                 != predicted[i]).reshape(400, -1)
        if not flips.any():
            continue
        ray = int(np.flatnonzero(flips.any(1))[np.argmin(flips.argmax(1)[flips.any(1)])])
        r = radii[flips[ray].argmax()]
        step = r * rays[ray, 0]  # the flipping perturbation itself, L2 norm r
        assert int(engine.output(torch.from_numpy(x[i] + step)[None]).argmax()) != predicted[i]
        assert sound[i] <= np.linalg.norm(step)
        broken += int(thesis[i] > np.linalg.norm(step))
    assert broken >= 1


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool", "LpPool"])
def test_a_dilated_pool_is_refused_in_one_line_by_every_windowed_rule(op):
    """Dilation is refused where every pooling rule reads its window (an AveragePool of opset 19 took it silently)."""
    from edgerobust.bounds.graph import BoundError

    engine = Engine(from_onnx(single(op, (2, 6, 6), kernel_shape=[2, 2], dilations=[2, 2])))
    with pytest.raises(BoundError, match="dilation") as info:
        engine.bounds(Ball(torch.zeros((1, 2, 6, 6), dtype=torch.float64), 0.1), "ibp")
    assert "\n" not in str(info.value)
