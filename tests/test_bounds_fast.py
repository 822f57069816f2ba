"""The fast CROWN pass (edgerobust/bounds/fast.py: coefficient windows, float32 products with a rigorous rounding
term) against the straightforward float64 pass on random small conv nets.

Same bounds table for both, so each comparison is one backward pass. The fast pass reports what it took off for
its own rounding (`last_error`, E): its bound is the CROWN bound of its computed coefficients minus E, and every
step's share of E also bounds how far that step's rounding moved the coefficients (times the magnitudes of what they
multiply), so the two bounds differ by at most 2·E plus the float64 pass's own slack (SLACK of its magnitudes).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from edgerobust.bounds import Ball, Engine, from_onnx
from edgerobust.bounds.fast import Pass
from edgerobust.bounds.rules.base import SLACK
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.models.normalize import NormalizedClassifier


def conv_net(seed, k, stride, pad, bn, clip, channels):
    torch.manual_seed(seed)
    c, size = channels, 8
    layers = [nn.Conv2d(2, c, k, stride, pad)]
    if bn:
        layers.append(nn.BatchNorm2d(c))
    layers += [nn.ReLU6() if clip else nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU()]
    body = nn.Sequential(*layers)
    with torch.no_grad():
        if bn:
            layers[1].running_mean.uniform_(-0.2, 0.2)
            layers[1].running_var.uniform_(0.5, 2.0)
        flat = body(torch.zeros(1, 2, size, size)).numel()
    body = nn.Sequential(body, nn.Flatten(), nn.Linear(flat, 6), nn.ReLU(), nn.Linear(6, 3))
    model = NormalizedClassifier(body, [0.45, 0.5], [0.3, 0.25]).eval()
    return Engine(from_onnx(simplify(to_onnx(model, (2, size, size), 13)))), (2, size, size)


def reference_table(engine, ball):
    with torch.enable_grad():  # the float64 pass (certified training's differentiable route)
        return engine.bounds(ball, "crown")


def refined(engine):
    return [n.dynamic[0] for n in engine.graph.nodes if n.op in ("Relu", "Clip") and engine.mixing[n.dynamic[0]] > 1]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.sampled_from([2, 3, 4]), stride=st.sampled_from([1, 2]),
       pad=st.sampled_from([0, 1]), bn=st.booleans(), clip=st.booleans(), channels=st.sampled_from([3, 4]),
       eps=st.sampled_from([0.01, 0.05]), norm=st.sampled_from(["inf", "2"]), density=st.sampled_from([1.0, 0.3]))
def test_fast_pass_equals_the_float64_pass_up_to_its_rounding_term(seed, k, stride, pad, bn, clip, channels, eps,
                                                                   norm, density):
    """All elements wanted (every position runs as blocks of whole points) or a random few (rows gathered)."""
    engine, shape = conv_net(seed, k, stride, pad, bn, clip, channels)
    x = torch.rand((3, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ball = Ball(x, eps if norm == "inf" else eps * 4, norm)
    table = reference_table(engine, ball)
    for name in refined(engine):
        lo = table[name][0]
        mask = torch.rand(lo.shape, generator=torch.Generator().manual_seed(seed)) < density
        points, elements = mask.reshape(len(x), -1).nonzero(as_tuple=True)
        fast = Pass(engine, name, table, ball, window=True, start_terms=1, track=True)
        assert fast.applies
        got = torch.empty((2, len(points)), dtype=torch.float64)
        budget = torch.empty_like(got)
        for rows, bound in fast.lower_elements(points, elements, 1 << 16):  # small chunks: several per position
            got[:, rows], budget[:, rows] = bound, fast.last_error
        A = torch.zeros((2, len(points), lo[0].numel()), dtype=torch.float64)
        A[0, torch.arange(len(points)), elements], A[1, torch.arange(len(points)), elements] = 1.0, -1.0
        from edgerobust.bounds.engine import _Rows
        a_in, bias, mag = engine.backward(name, A.reshape(2, len(points), *lo.shape[1:]), _Rows(table, points))
        ref = ball.select(points).lower(a_in, bias, mag)
        size = (a_in.abs().reshape(2, len(points), -1).sum(-1) + mag + bias.abs() + ref.abs())
        tolerance = 2 * budget + 4 * SLACK * size
        assert torch.all(torch.isfinite(got))
        assert torch.all((got - ref).abs() <= tolerance), float(((got - ref).abs() - tolerance).max())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.02, 0.05]))
def test_fast_bounds_hold_at_sampled_points_and_margins_match(seed, eps):
    engine, shape = conv_net(seed, 4, 2, 1, True, False, 4)
    x = torch.rand((2, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ball = Ball(x, eps)
    with torch.no_grad():
        table = engine.bounds(ball, "crown")  # intermediate bounds by the fast pass
        labels = engine.output(x).argmax(1)
        margins, _ = engine.margins(ball, labels, "crown", table=table)
    rng = np.random.default_rng(seed)
    for i in range(len(x)):
        d = rng.uniform(-eps, eps, (200, *shape))
        d[:50] = np.sign(d[:50]) * eps
        pts = torch.from_numpy(np.clip(x[i].numpy() + d, 0, 1))
        values = engine.forward(pts)
        for name, (lo, hi) in table.items():
            assert torch.all(values[name] >= lo[i]) and torch.all(values[name] <= hi[i]), name
        out = values[engine.graph.output]
        gap = out[:, labels[i]].unsqueeze(1) - out
        finite = torch.isfinite(margins[i])
        assert torch.all(gap[:, finite] >= margins[i][finite])
    # the margins' fast pass against the float64 pass over the same table
    K = margins.shape[1]
    C = torch.zeros((K, len(x), K), dtype=torch.float64)
    C[:, torch.arange(len(x)), labels] = 1.0
    C[torch.arange(K), :, torch.arange(K)] -= 1.0
    a_in, bias, mag = engine.backward(engine.graph.output, C, table)
    ref = ball.lower(a_in, bias, mag)
    fast = Pass(engine, engine.graph.output, table, ball, window=False, start_terms=2, track=True)
    got = fast.lower_dense(C, 1 << 20)
    size = a_in.abs().reshape(K, len(x), -1).sum(-1) + mag + bias.abs() + ref.abs()
    assert torch.all((got - ref).abs() <= 2 * fast.last_error + 4 * SLACK * size)
    assert not math.isnan(float(got.sum()))
