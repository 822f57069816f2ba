"""α-CROWN on int8 (QDQ) artifacts (issues 22/23): the quantizer's optimisable lines and what onnxruntime computes.

The rule-level property checks every line the optimiser may pick (any α, out of range and nan included) against
every rounding to nearest in the node's window, at the staircase's jump points, on both sides of each and at the
saturation ends; the network-level one checks α-CROWN's margins and bounds against onnxruntime's int8 outputs at
sampled points of each ball, at the input quantizer's jump points and at the box's ends. Comparisons are exact in
float64 or within the few roundings of the test's own evaluation of a line (bounded relative to its terms).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper
from test_int8_certify import INT8, output_bounds, small_net

from edgerobust.bounds import ARITHMETIC_MODELS, Ball, Engine, from_onnx
from edgerobust.bounds.graph import Node
from edgerobust.bounds.rules.quantize import WINDOW, QuantizeLinear, staircase_lines
from edgerobust.certify.core import certify_points
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.export.parity import ort_session, run_onnx
from edgerobust.export.quantize import Int8Settings, quantize_int8
from edgerobust.remote.certify_check import violations
from edgerobust.runner.balls import ball_batches

ALPHAS = st.one_of(st.floats(-1.0, 2.0), st.sampled_from([0.0, 1.0, math.nan, math.inf, -math.inf, 1e300]))


def _roundings(tv: float, z: int, low: int, high: int) -> set[int]:
    """Every saturated round-to-nearest of tv + z: either way at a tie."""
    ties = {math.floor(tv), math.ceil(tv)} if tv - math.floor(tv) == 0.5 else {math.floor(tv + 0.5)}
    return {min(max(r + z, low), high) for r in ties}


SLOPES = st.one_of(st.floats(0.0, 1e4), st.sampled_from([0.0, 0.5, 1.0, 2.0, 1e6]))


@settings(max_examples=400, deadline=None)
@given(signed=st.booleans(), zero=st.integers(0, 255), start=st.integers(-600, 600), frac=st.sampled_from(
       [0.0, 0.5, None]), width=st.one_of(st.integers(0, 16).map(lambda n: n / 2), st.floats(0.0, 12.0)),
       win=st.sampled_from([0.0, 0.25, None]), a_l=SLOPES, a_u=SLOPES, seed=st.integers(0, 99))
def test_the_staircase_lines_are_sound_for_any_slope_and_tight(signed, zero, start, frac, width, win, a_l, a_u,
                                                               seed):
    """For any slopes >= 0, the intercepts bound every saturated rounding to nearest (either way at a tie) of every
    t̂ in [tl, th] at every x/s within w of it; ends on ties and jumps (half-integers) half the time, so the tie at
    an end of the range is checked. Without a window the lower one is attained: the exact infimum."""
    rng = np.random.default_rng(seed)
    z, (low, high) = (zero - 128, (-128, 127)) if signed else (zero, (0, 255))
    tl = start / 4 + (rng.random() if frac is None else frac)
    th = tl + width
    w = rng.random() * 0.6 if win is None else win
    t64 = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    lb, ub = (float(v) for v in staircase_lines(t64(tl), t64(th), t64(w), t64(float(z)), float(low), float(high),
                                                  t64(a_l), t64(a_u)))
    assert math.isfinite(lb) and math.isfinite(ub)
    jumps = np.arange(low - 1, high + 1) + 0.5 - z
    ts = np.concatenate([[tl, th], jumps[(jumps >= tl) & (jumps <= th)], rng.uniform(tl, th, 50)])
    lowest = math.inf
    for tv in ts:
        ys = _roundings(float(tv), z, low, high)
        lowest = min(lowest, min(ys) - a_l * tv)
        for xs in (tv - w, tv, tv + w, tv + rng.uniform(-w, w)):  # x/s within w of the value rounded
            for y in ys:
                assert a_l * xs + lb <= y + 2.0 ** -48 * (abs(a_l * xs) + abs(lb) + 1)
                assert y <= a_u * xs + ub + 2.0 ** -48 * (abs(a_u * xs) + abs(ub) + 1)
    if w == 0:
        assert abs(lowest - lb) <= 2.0 ** -46 * (abs(lowest) + abs(a_l * th) + abs(a_l * tl) + 1)


@settings(max_examples=300, deadline=None)
@given(scale=st.floats(2.0 ** -8, 4.0), zero=st.integers(0, 255), signed=st.booleans(),
       centre=st.floats(-300.0, 300.0), width=st.floats(0.0, 8.0), win=st.floats(0.0, 0.6),
       alphas=st.lists(st.tuples(ALPHAS, ALPHAS), min_size=1, max_size=6), open_end=st.sampled_from([None, 0, 1]),
       seed=st.integers(0, 99))
def test_the_optimisable_quantizer_lines_hold_every_rounding_for_any_alpha(scale, zero, signed, centre, width, win,
                                                                           alphas, open_end, seed):
    """For any α (one row per spec), x anywhere in [l, u] (one end possibly infinite) and any value within the
    window of x / s rounded either way at a tie and saturated: lower line <= y <= upper line, and every line is
    finite. The points checked include each jump of the staircase, the window's width on either side of it, and
    the saturation edges."""
    s = torch.tensor(scale, dtype=torch.float64)
    z = torch.tensor(zero - 128 if signed else zero, dtype=torch.int8 if signed else torch.uint8)
    zi, (low, high) = int(z), ((-128, 127) if signed else (0, 255))
    node = Node("QuantizeLinear", ["x", "s", "z"], ["q"], {WINDOW: torch.tensor([[win]], dtype=torch.float64)}, "q",
                {"s": s, "z": z})
    rng = np.random.default_rng(seed)
    c = (round(centre * 2) / 2 if seed % 2 else centre) * scale
    l, u = c - width * scale / 2, c + width * scale / 2  # noqa: E741
    lo = torch.tensor([[-math.inf if open_end == 0 else l]], dtype=torch.float64)
    hi = torch.tensor([[math.inf if open_end == 1 else u]], dtype=torch.float64)
    alpha = torch.tensor(alphas, dtype=torch.float64).reshape(len(alphas), 2, 1, 1)
    rule = QuantizeLinear()
    ls, lb, us, ub = (t.reshape(len(alphas)).numpy() for t in rule.relaxation(node, lo, hi, alpha=alpha))
    assert np.isfinite(ls).all() and np.isfinite(lb).all() and np.isfinite(us).all() and np.isfinite(ub).all()
    assert (ls >= 0).all() and (us >= 0).all()
    start = rule.alpha_start(node, lo, hi)
    assert start.shape == (2, 1, 1) and bool(((start == 0) | (start == 1)).all())
    # the points: the jumps t = n + 1/2 - z of the staircase (the saturation edges among them), ± the window
    jumps = np.arange(low - 1, high + 1) + 0.5 - zi
    xs = np.concatenate([[l, u, c], rng.uniform(l, u, 100), jumps * scale, (jumps - win) * scale,
                         (jumps + win) * scale, [l - 50 * scale, l - 300 * scale] if open_end == 0 else [],
                         [u + 50 * scale, u + 300 * scale] if open_end == 1 else []])
    inside = (xs >= (-math.inf if open_end == 0 else l)) & (xs <= (math.inf if open_end == 1 else u))
    for xv in xs[inside]:
        t = xv / scale
        near = jumps[(jumps >= t - win) & (jumps <= t + win)]  # a jump point inside this x's window
        for tv in np.concatenate([t + rng.uniform(-win, win, 8), [t - win, t + win], near]):
            for y in _roundings(float(tv), zi, low, high):
                # the test's own float64 evaluation of the lines: a few roundings of their terms
                assert (ls * xv + lb <= y + 2.0 ** -48 * (np.abs(ls * xv) + np.abs(lb) + 1)).all()
                assert (y <= us * xv + ub + 2.0 ** -48 * (np.abs(us * xv) + np.abs(ub) + 1)).all()


def one_jump_net(c: float) -> onnx.ModelProto:
    """logits = (xq - x/2, c) of x in [0, 1] ([N, 1]), xq = x rounded to steps of 0.1: over [0.44, 0.54] the margin
    xq - x/2 - c is smallest (0.175 - c) just below the jump at 0.45; CROWN's steep lower line of xq (more of the
    range lies past the jump) gives 0.169 - c, the flat one 0.13 - c, the best slope 1/2 exactly 0.175 - c."""
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.uint8(0), "z"),
             numpy_helper.from_array(np.array([[1.0, 0.0]], np.float32), "W1"),
             numpy_helper.from_array(np.array([[-0.5, 0.0]], np.float32), "W2"),
             numpy_helper.from_array(np.array([0.0, c], np.float32), "b")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xq"]),
             helper.make_node("Gemm", ["xq", "W1", "b"], ["a"]), helper.make_node("Gemm", ["input", "W2"], ["d"]),
             helper.make_node("Add", ["a", "d"], ["logits"])]
    graph = helper.make_graph(nodes, "jump", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                                            ["N", 1])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_alpha_crown_certifies_an_int8_ball_crown_cannot_by_a_gentler_quantizer_slope(tmp_path):
    proto = one_jump_net(0.172)
    onnx.save(proto, tmp_path / "int8.onnx")
    inside = np.linspace(0.44, 0.54, 1001, dtype=np.float32).reshape(-1, 1)
    out = run_onnx(ort_session(tmp_path / "int8.onnx"), inside)
    assert (out.argmax(1) == 0).all()  # the ball is robust: class 0 throughout (the jump at 0.45 included)
    engine, x, labels = Engine(from_onnx(proto)), np.array([[0.49]]), np.array([0])
    crown = certify_points(engine, x, labels, 0.05, "inf", "crown", [ARITHMETIC_MODELS.get("real"), INT8])
    alpha = certify_points(engine, x, labels, 0.05, "inf", "alpha-crown", [ARITHMETIC_MODELS.get("real"), INT8])
    assert not crown.certified["int8"].any() and alpha.certified["int8"].all() and alpha.certified["real"].all()
    assert alpha.bounds["int8"][0, 1] <= float((out[:, 0] - out[:, 1]).astype(np.float64).min())


def jump_points(x: np.ndarray, eps: float, step: float, offset: float, rng, n: int) -> np.ndarray:
    """n points of the box ∩ [0, 1] around x whose coordinates sit on the input quantizer's jumps offset + (k + 1/2)·
    step (in float32, the nearest inside the box) or on the box's ends (0 and 1 among them: the saturation ends)."""
    lo, hi = np.maximum(0.0, x - eps), np.minimum(1.0, x + eps)
    v = lo + rng.random((n, *x.shape)) * (hi - lo)
    snapped = offset + (np.floor((v - offset) / step) + 0.5) * step
    snapped = np.where(snapped < lo, snapped + step, snapped)  # the jump at or above v's cell, if inside
    ends = np.where(rng.random((n, *x.shape)) < 0.5, lo, hi)
    points = np.where(rng.random((n, *x.shape)) < 0.6, snapped, ends).clip(lo, hi).astype(np.float32)
    points = np.where(points.astype(np.float64) > hi, np.nextafter(points, np.float32(-1)), points)
    return np.where(points.astype(np.float64) < lo, np.nextafter(points, np.float32(2)), points)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]),
       eps=st.sampled_from([0.01, 0.03, 0.08]), reduce=st.booleans())
def test_alpha_crown_on_random_qdq_networks_is_never_looser_than_crown_and_holds_onnxruntime(tmp_path_factory, seed,
                                                                                            kind, eps, reduce):
    """Tiny random torch models through the export's quantizer: α-CROWN's margins are at least CROWN's per spec,
    and onnxruntime's int8 outputs at points drawn in each ball, at the input quantizer's jump points and at the
    box's ends keep every margin above its α-CROWN bound and every logit inside the bounds."""
    model, shape = small_net(seed, kind)
    rng = np.random.default_rng(seed)
    proto = simplify(to_onnx(model, shape, 13))
    quantized = quantize_int8(proto, rng.random((32, *shape)).astype(np.float32), shape,
                              Int8Settings(reduce_range=reduce))
    path = tmp_path_factory.mktemp("qdq") / "int8.onnx"
    onnx.save(quantized, path)
    engine = Engine(from_onnx(quantized))
    x = rng.random((3, *shape))
    labels = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    with torch.no_grad():
        ball = Ball(torch.from_numpy(x), eps, "inf")
        crown, table = engine.margins(ball, torch.from_numpy(labels), "crown")
        alpha, _ = engine.margins(ball, torch.from_numpy(labels), "alpha-crown", table=table, steps=10)
    assert torch.all(alpha >= crown)
    lo, hi = output_bounds(engine, x, eps, method="crown")  # the logits' bounds: the table α-CROWN starts from
    certs = certify_points(engine, x, labels, eps, "inf", "alpha-crown", [INT8])
    first = next(n for n in engine.graph.nodes if n.op == "QuantizeLinear")
    # the first quantizer reads the normalised input (x - 0.45) / 0.3 (small_net): its jumps lie at
    # x = 0.45 + 0.3·s·(j + 1/2) for integers j (z is an integer)
    step = 0.3 * float(first.const(1))
    session = ort_session(path)
    for i in range(len(x)):
        points = np.concatenate([x[i:i + 1].astype(np.float32),
                                 *ball_batches(x[i].astype(np.float32), eps, "inf", 512, 512, seed, i),
                                 jump_points(x[i], eps, step, 0.45, rng, 512)])
        wide = points.astype(np.float64)
        points = points[((wide >= np.maximum(0, x[i] - eps)) & (wide <= np.minimum(1, x[i] + eps))).reshape(
            len(points), -1).all(1)]
        out = run_onnx(session, points).astype(np.float64)
        assert (out >= lo[i]).all() and (out <= hi[i]).all()
        bound = [None if not np.isfinite(v) else float(v) for v in certs.bounds["int8"][i]]
        assert violations(out, int(labels[i]), bound)["violations"] == 0
