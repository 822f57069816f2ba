"""α-CROWN on every operator with a free slope (issue 22): Clip's lower slope at `low` and upper slope at `high`,
MaxPool's weights of the window's convex combination.

Rule level: for any α (out of [0, 1] and nan included: the rules clamp and normalise) the lines hold at every x of
[l, u], the kinks among them, and at every point of a MaxPool's input box (its corners among them). Network level: on
random float networks with ReLU6/Hardtanh (Clip) and overlapping, padded MaxPool, α-CROWN's margins are at least
CROWN's per spec and hold at sampled points of each ball in the exact float64 forward pass and in onnxruntime's
fp32 outputs within the engine's fp32 error term. Comparisons are exact in float64 or within a few roundings of
the test's own evaluation of a line, bounded relative to its terms.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgerobust.bounds import ARITHMETIC_MODELS, Ball, Engine, from_onnx
from edgerobust.bounds.graph import Node
from edgerobust.bounds.rules.activation import Clip
from edgerobust.bounds.rules.pooling import MaxPool
from edgerobust.certify.core import certify_points
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.export.parity import ort_session, run_onnx
from edgerobust.models.normalize import NormalizedClassifier


def clip_node(low: float, high: float) -> Node:
    return Node("Clip", ["x", "lo", "hi"], ["y"], {}, "y",
                {"lo": torch.tensor(low, dtype=torch.float64), "hi": torch.tensor(high, dtype=torch.float64)})


@settings(max_examples=300, deadline=None)
@given(low=st.floats(-3.0, 3.0), span=st.floats(0.0, 6.0), a=st.floats(-10.0, 10.0), b=st.floats(-10.0, 10.0),
       alphas=st.lists(st.one_of(st.floats(-1.0, 2.0), st.sampled_from([0.0, 1.0, math.nan])), min_size=1,
                       max_size=4), seed=st.integers(0, 99))
def test_the_clip_lines_hold_for_any_alpha(low, span, a, b, alphas, seed):
    """A·clip(x) >= the backward step's linear function of x for A = ±1 (the lower and the upper line), any α."""
    high = low + span
    node = clip_node(low, high)
    rule = Clip()
    l, u = min(a, b), max(a, b)  # noqa: E741
    lo, hi = torch.tensor([[l]], dtype=torch.float64), torch.tensor([[u]], dtype=torch.float64)
    start = rule.alpha_start(node, lo, hi)
    assert bool(((start == 0) | (start == 1)).all())
    rng = np.random.default_rng(seed)
    xs = np.concatenate([[l, u, low, high], rng.uniform(l, u, 100)])
    xs = xs[(xs >= l) & (xs <= u)]
    for value in alphas:
        alpha = torch.full((2, 1, 1), value, dtype=torch.float64)
        A = torch.tensor([1.0, -1.0], dtype=torch.float64).reshape(2, 1, 1)
        (a_in,), bias, _ = rule.backward(node, A, (lo, hi), alpha=alpha)
        for sign, coef, const in zip((1.0, -1.0), a_in.reshape(2).tolist(), bias.reshape(2).tolist(), strict=True):
            for xv in xs:
                y = min(max(xv, low), high)
                # the line's constants: a few float64 operations on l, u, low, high (|slope| <= 1), and the test's
                size = abs(coef * xv) + abs(const) + abs(y) + max(abs(l), abs(u), abs(low), abs(high))
                assert sign * y >= coef * xv + const - 2.0 ** -48 * size


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), kernel=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 1),
       weird=st.sampled_from([None, "nan", "negative", "zero"]))
def test_the_maxpool_lines_hold_for_any_alpha(seed, kernel, stride, pad, weird):
    """For every output element alone (the specs ±e_j: no slack of one window hides another's violation) and any
    α, A·maxpool(x) >= the backward step's linear function at random points and corners of the input box (padded,
    overlapping windows and all-negative windows included)."""
    pad = min(pad, kernel // 2)
    node = Node("MaxPool", ["x"], ["y"], {"kernel_shape": [kernel, kernel], "strides": [stride, stride],
                                          "pads": [pad, pad, pad, pad]}, "y", {})
    rule = MaxPool()
    g = torch.Generator().manual_seed(seed)
    lo = torch.randn((2, 2, 5, 5), dtype=torch.float64, generator=g) * 2 - 1
    hi = lo + torch.rand((2, 2, 5, 5), dtype=torch.float64, generator=g)
    start = rule.alpha_start(node, lo, hi)
    out_shape = rule.forward(node, lo).shape
    n = int(np.prod(out_shape[1:]))
    A = torch.cat([torch.eye(n, dtype=torch.float64), -torch.eye(n, dtype=torch.float64)]).reshape(2 * n, 1, n)
    A = A.expand(2 * n, 2, n).reshape(2 * n, *out_shape).contiguous()
    S = 2 * n
    alpha = torch.rand((S, *start.shape), dtype=torch.float64, generator=g) * 3 - 1
    if weird == "nan":
        alpha[::2] = math.nan
    elif weird == "negative":
        alpha[::2] = -1.0
    elif weird == "zero":
        alpha[::2] = 0.0
    (a_in,), bias, _ = rule.backward(node, A, (lo, hi), alpha=alpha)
    (c_in,), c_bias, _ = rule.backward(node, A, (lo, hi))
    (s_in,), s_bias, _ = rule.backward(node, A, (lo, hi), alpha=start.unsqueeze(0).expand(S, *start.shape))
    assert torch.equal(s_in, c_in) and torch.equal(s_bias, c_bias)  # α-CROWN starts at CROWN's choice exactly
    u = torch.rand((40, *lo.shape), dtype=torch.float64, generator=g)
    u[:20] = u[:20].round()  # corners of the box
    for x in lo + u * (hi - lo):
        y = rule.forward(node, x)
        value = (A * y).reshape(S, 2, -1).sum(-1)
        line = (a_in * x).reshape(S, 2, -1).sum(-1) + bias
        size = (A.abs() * y.abs()).reshape(S, 2, -1).sum(-1) + (a_in.abs() * x.abs()).reshape(S, 2, -1).sum(-1)
        assert torch.all(value >= line - 2.0 ** -48 * (size + bias.abs()))


def relu6_net(seed: int):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.ReLU6(), nn.Linear(10, 8), nn.Hardtanh(0.0, 1.0),
                         nn.Linear(8, 3))
    with torch.no_grad():  # large enough that many inputs cross the upper kink too
        body[1].weight.mul_(6.0)
        body[3].weight.mul_(3.0)
    return NormalizedClassifier(body, [0.45], [0.3]).eval(), (1, 3, 4)


def pool_net(seed: int):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                         nn.Conv2d(3, 3, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        body[3].weight.mul_(3.0)
    return NormalizedClassifier(body, [0.45], [0.3]).eval(), (1, 8, 8)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["clip", "pool"]), eps=st.sampled_from([0.01, 0.03, 0.1]))
def test_alpha_crown_on_clip_and_pool_networks_is_never_looser_than_crown_and_holds(tmp_path_factory, seed, kind,
                                                                                    eps):
    model, shape = (relu6_net if kind == "clip" else pool_net)(seed)
    proto = simplify(to_onnx(model, shape, 13))
    assert sum(n.op_type == ("Clip" if kind == "clip" else "MaxPool") for n in proto.graph.node) == 2
    path = tmp_path_factory.mktemp("alpha") / "model.onnx"
    onnx.save(proto, path)
    engine = Engine(from_onnx(proto))
    rng = np.random.default_rng(seed)
    x = rng.random((3, *shape)).astype(np.float32).astype(np.float64)
    labels = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    with torch.no_grad():
        ball = Ball(torch.from_numpy(x), eps, "inf")
        crown, table = engine.margins(ball, torch.from_numpy(labels), "crown")
        alpha, _ = engine.margins(ball, torch.from_numpy(labels), "alpha-crown", table=table, steps=10)
    assert torch.all(alpha >= crown)
    fp32 = ARITHMETIC_MODELS.get("fp32")
    certs = certify_points(engine, x, labels, eps, "inf", "alpha-crown", [ARITHMETIC_MODELS.get("real"), fp32])
    session = ort_session(path)
    for i in range(len(x)):
        d = rng.uniform(-eps, eps, (600, *shape))
        d[:300] = np.sign(d[:300]) * eps  # vertices
        points = np.clip(x[i] + d, np.maximum(0, x[i] - eps), np.minimum(1, x[i] + eps))
        points = points[np.abs(points.astype(np.float32).astype(np.float64) - x[i]).reshape(600, -1).max(1) <= eps]
        points = points.astype(np.float32)
        exact = engine.output(torch.from_numpy(points.astype(np.float64))).numpy()
        device = run_onnx(session, points).astype(np.float64)
        for name, out in (("real", exact), ("fp32", device)):
            bound = certs.bounds[name][i]
            margins = out[:, labels[i]:labels[i] + 1] - out
            keep = np.isfinite(bound)
            assert (margins[:, keep] >= bound[keep]).all()
