"""Lipschitz-margin certificates and Peck's sound bounds on the artifact's graph (certify/lipschitz.py): the
operator norms are upper bounds, the per-tensor constants bound what the network does, the certified margins hold
at sampled and attacked points, Peck is never looser than Lipschitz, and the thesis's invalid rules are pinned."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bounds import pgd_best, random_net, sample_ball
from torch import nn

from edgerobust.bounds import ARITHMETIC_MODELS, Ball, Engine, from_onnx
from edgerobust.certify.core import certify_points
from edgerobust.certify.lipschitz import global_margins, operator_norm, tensor_lipschitz
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.models.lipschitz import conv_norm


def engine_of(model, shape):
    return Engine(from_onnx(simplify(to_onnx(model, shape, 13))))


def test_peck_thesis_conv_rule_is_not_a_bound_and_the_operator_norm_is():
    # Peck's Thm 5.1 assumes ‖W⋆R‖_F <= ‖W‖_F‖R‖_F: false for overlapping windows (the reference digest's case)
    w, r = torch.ones(1, 1, 3, 3, dtype=torch.float64), torch.ones(1, 1, 5, 5, dtype=torch.float64)
    out = F.conv2d(r, w)
    assert float(out.norm()) == 27.0 and float(w.norm() * r.norm()) == 15.0
    conv = nn.Conv2d(1, 1, 3, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    engine = engine_of(nn.Sequential(conv), (1, 5, 5))
    index = next(i for i, n in enumerate(engine.graph.nodes) if n.op == "Conv")
    assert operator_norm(engine, index, (1, 5, 5)) * float(r.norm()) >= 27.0


def test_peck_thesis_batchnorm_max_rule_is_not_a_bound():
    # Thm 5.6 takes max_j over channels; identity BN, x = (10, 0), κ = 1: the thesis says 3.2404, yet a step of
    # norm 1 along channel 0 already moves the output by 1. The sound rule κ / max_j |γ_j| / √(var_j + ε) gives <= 1.
    thesis, step = 3.2404, 1.0
    assert thesis > step
    bn = nn.BatchNorm2d(2, eps=0.0).eval()
    engine = engine_of(nn.Sequential(bn), (2, 1, 1))
    index = next(i for i, n in enumerate(engine.graph.nodes) if n.op in ("BatchNormalization", "Mul", "Add"))
    assert 1.0 / operator_norm(engine, index, (2, 1, 1)) <= step


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), stride=st.integers(1, 2), pad=st.integers(0, 2))
def test_conv_and_linear_operator_norms_bound_power_iteration(seed, stride, pad):
    torch.manual_seed(seed)
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=pad).double()
    fc = nn.Linear(3 * 4 * 4, 5).double()
    engine = engine_of(nn.Sequential(conv).float(), (2, 7, 7))
    index = next(i for i, n in enumerate(engine.graph.nodes) if n.op == "Conv")
    assert operator_norm(engine, index, (2, 7, 7)) >= conv_norm(conv.float(), (2, 7, 7)) * (1 - 1e-6)
    engine = engine_of(nn.Sequential(nn.Flatten(), fc).float(), (3, 4, 4))
    index = next(i for i, n in enumerate(engine.graph.nodes) if n.op in ("Gemm", "MatMul"))
    exact = float(torch.linalg.matrix_norm(fc.float().weight.detach().double(), ord=2))
    assert exact <= operator_norm(engine, index, (3 * 4 * 4,)) <= exact * (1 + 1e-8)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]))
def test_the_logits_lipschitz_constant_bounds_every_pair_of_points(seed, kind):
    model, shape = random_net(seed, kind)
    engine = engine_of(model, shape)
    lip = tensor_lipschitz(engine, shape)[engine.graph.output]
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((200, *shape)))
    y = (x + torch.from_numpy(rng.normal(0, 0.05, x.shape))).clamp(0, 1)
    ratio = (engine.output(x) - engine.output(y)).norm(dim=1) / (x - y).reshape(200, -1).norm(dim=1)
    assert float(ratio.max()) <= lip


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]), norm=st.sampled_from(["inf", "2"]))
def test_lipschitz_and_peck_margins_hold_and_peck_is_never_looser(seed, kind, norm):
    model, shape = random_net(seed, kind)
    engine = engine_of(model, shape)
    rng = np.random.default_rng(seed)
    x = rng.random((3, *shape))
    eps = 0.003 if norm == "inf" else 0.02
    labels = engine.output(torch.from_numpy(x)).argmax(1)
    ball = Ball(torch.from_numpy(x), eps, norm)
    with torch.no_grad():
        lip = global_margins(engine, ball, labels, "lipschitz")
        peck = global_margins(engine, ball, labels, "peck")
    assert torch.all(peck >= lip)
    for i in range(3):
        points = np.concatenate([sample_ball(rng, x[i], eps, norm, 200),
                                 pgd_best(model, x[i], int(labels[i]), eps, norm)[None]])
        points = np.clip(points, np.clip(x[i] - eps, 0, 1), np.clip(x[i] + eps, 0, 1))
        if norm == "2":
            points = points[np.linalg.norm((points - x[i]).reshape(len(points), -1), axis=1) <= eps]
        out = engine.output(torch.from_numpy(points))
        margin = out[:, labels[i]].unsqueeze(1) - out
        others = torch.arange(out.shape[1]) != labels[i]
        assert torch.all(margin[:, others] >= peck[i, others].unsqueeze(0))


def test_a_point_peck_certifies_is_never_broken_by_pgd():
    # a small linear-ish net with a large margin: Peck certifies, and PGD (the float64 model) never flips it
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    from edgerobust.models.normalize import NormalizedClassifier

    model = NormalizedClassifier(body, [0.5], [0.5]).eval()
    engine = engine_of(model, (1, 2, 2))
    x = np.random.default_rng(0).random((16, 1, 2, 2))
    labels = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    certs = certify_points(engine, x, labels, 0.02, "2", "peck", [ARITHMETIC_MODELS.get("real")])
    assert certs.certified["real"].any()
    for i in np.flatnonzero(certs.certified["real"]):
        adv = pgd_best(model, x[i], int(labels[i]), 0.02, "2", steps=50)
        assert int(engine.output(torch.from_numpy(adv[None])).argmax(1)) == labels[i]


def test_lipschitz_certificate_scales_with_sqrt_d_for_linf():
    model, shape = random_net(1, "mlp")
    engine = engine_of(model, shape)
    x = torch.from_numpy(np.random.default_rng(1).random((2, *shape)))
    labels = engine.output(x).argmax(1)
    with torch.no_grad():
        at0 = global_margins(engine, Ball(x, 0.0), labels, "lipschitz")
        inf = global_margins(engine, Ball(x, 0.01, "inf"), labels, "lipschitz")
        two = global_margins(engine, Ball(x, 0.01 * math.sqrt(x[0].numel()), "2"), labels, "lipschitz")
    finite = torch.isfinite(at0)
    assert torch.allclose(inf[finite], two[finite], rtol=0, atol=1e-12) and torch.all(inf[finite] < at0[finite])


def test_unknown_method_is_one_line():
    from edgerobust.certify.api import CertifyError, certify_bundle

    with pytest.raises(CertifyError, match="unknown method 'lip'; choose one of ibp, crown, alpha-crown, lipschitz"):
        certify_bundle("nowhere", [0.01], method="lip")
