"""Soundness of the bound engine (edgerobust/bounds) and of certificates for artifacts (edgerobust/certify).

Every comparison is exact in float64 or within a bound the engine derives (its own float64 slack, the error terms
of an arithmetic model); nothing is tuned to one CPU.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from edgerobust.bounds import ARITHMETIC_MODELS, Ball, BoundError, Engine, from_onnx, magnitudes
from edgerobust.certify.core import certified_radius, certify_points
from edgerobust.errors import EdgeRobustError
from edgerobust.export.fp16 import to_fp16
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.export.parity import ort_session, run_onnx
from edgerobust.models.normalize import NormalizedClassifier


def random_net(seed: int, kind: str) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(seed)
    if kind == "mlp":
        body = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))
        shape = (1, 4, 4)
    elif kind == "conv":
        body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU6(), nn.Flatten(), nn.Linear(16, 3))
        shape = (2, 6, 6)
        with torch.no_grad():
            body[1].running_mean.uniform_(-0.2, 0.2)
            body[1].running_var.uniform_(0.5, 2.0)
    else:  # residual block with average pooling
        class Res(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
                self.pool, self.fc = nn.AvgPool2d(2), nn.Linear(12, 3)

            def forward(self, x):
                h = torch.relu(self.a(x))
                h = torch.relu(h + self.b(h))
                return self.fc(torch.flatten(self.pool(h), 1))
        body, shape = Res(), (1, 4, 4)
    model = NormalizedClassifier(body, [0.45] * shape[0], [0.3] * shape[0]).eval()
    return model, shape


def artifact(model, shape, folder, name="model"):
    proto = simplify(to_onnx(model, shape, 13))
    onnx.save(proto, folder / f"{name}.onnx")
    onnx.save(to_fp16(proto), folder / f"{name}.fp16.onnx")
    return proto, onnx.load(folder / f"{name}.fp16.onnx")


def sample_ball(rng, x, eps, norm, n):
    """n points of the ball ∩ [0, 1] around x (a few corners of the box among them for L∞)."""
    if norm == "inf":
        d = rng.uniform(-eps, eps, (n, *x.shape))
        d[: n // 4] = np.sign(d[: n // 4]) * eps
    else:
        d = rng.normal(size=(n, *x.shape))
        d *= eps * rng.uniform(0, 1, (n, 1, 1, 1)) ** (1 / d[0].size) / np.linalg.norm(d.reshape(n, -1), axis=1
                                                                                        ).reshape(n, 1, 1, 1)
    return np.clip(x + d, 0, 1)


def pgd_best(model, x, label, eps, norm, steps=30):
    """The point of the ball (∩ box) with the smallest margin PGD finds on the float64 model."""
    model = model.double()
    x0 = torch.from_numpy(x[None]).double()
    delta = torch.zeros_like(x0, requires_grad=True)
    for _ in range(steps):
        out = model((x0 + delta).clamp(0, 1))
        other = out.clone()
        other[0, label] = -np.inf
        margin = out[0, label] - other.max()
        (grad,) = torch.autograd.grad(margin, delta)
        with torch.no_grad():
            if norm == "inf":
                delta -= eps / 4 * grad.sign()
                delta.clamp_(-eps, eps)
            else:
                delta -= eps / 4 * grad / grad.norm().clamp_min(1e-12)
                delta *= (eps / delta.norm().clamp_min(1e-12)).clamp(max=1.0)
    model.float()
    return (x0 + delta).clamp(0, 1).detach().numpy()[0]


def test_bounds_at_eps_zero_equal_the_forward_pass():
    model, shape = random_net(0, "conv")
    engine = Engine(from_onnx(simplify(to_onnx(model, shape, 13))))
    x = torch.rand(5, *shape, dtype=torch.float64)
    exact = engine.output(x)
    for method in ("ibp", "crown"):
        with torch.no_grad():
            lo, hi = engine.bounds(Ball(x, 0.0), method)[engine.graph.output]
        assert torch.all(lo <= exact) and torch.all(exact <= hi)
        # The only width left is the engine's own float64 slack (rules/base.py): far below any margin.
        assert float((hi - lo).max()) <= 2.0 ** -30 * (1 + float(exact.abs().max()))


def test_a_single_linear_layer_is_exact():
    torch.manual_seed(1)
    layer = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).eval()
    engine = Engine(from_onnx(simplify(to_onnx(layer, (1, 2, 3), 13))))
    x = torch.rand(4, 1, 2, 3, dtype=torch.float64)
    labels = engine.output(x).argmax(1)
    w, b = layer[1].weight.double(), layer[1].bias.double()
    ball = Ball(x, 0.05)
    lo_box, hi_box = ball.box()
    with torch.no_grad():
        margins, _ = engine.margins(ball, labels, "crown")
    for i in range(4):
        for j in range(3):
            if j == labels[i]:
                continue
            d = w[labels[i]] - w[j]
            corner = torch.where(d >= 0, lo_box[i].flatten(), hi_box[i].flatten())  # the minimiser over the box
            attained = float((d @ corner + b[labels[i]] - b[j]).detach())
            assert margins[i, j] <= attained  # sound
            assert attained - margins[i, j] <= 2.0 ** -30 * (1 + abs(attained)) * 4  # and tight: attained


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]),
       eps=st.sampled_from([0.002, 0.01, 0.05]), norm=st.sampled_from(["inf", "2"]))
def test_crown_never_looser_than_ibp_and_alpha_never_looser_than_crown(seed, kind, eps, norm):
    model, shape = random_net(seed, kind)
    engine = Engine(from_onnx(simplify(to_onnx(model, shape, 13))))
    x = torch.rand(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    labels = engine.output(x).argmax(1)
    with torch.no_grad():
        ibp, _ = engine.margins(Ball(x, eps, norm), labels, "ibp")
        crown, table = engine.margins(Ball(x, eps, norm), labels, "crown")
        alpha, _ = engine.margins(Ball(x, eps, norm), labels, "alpha-crown", steps=5)
        lo_i, hi_i = engine.bounds(Ball(x, eps, norm), "ibp")[engine.graph.output]
    lo_c, hi_c = table[engine.graph.output]
    assert torch.all(crown >= ibp) and torch.all(alpha >= crown)
    assert torch.all(lo_c >= lo_i) and torch.all(hi_c <= hi_i)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]),
       eps=st.sampled_from([0.005, 0.02, 0.1]), norm=st.sampled_from(["inf", "2"]),
       method=st.sampled_from(["ibp", "crown"]))
def test_no_point_of_a_certified_ball_escapes_the_bounds_on_the_artifacts(tmp_path_factory, seed, kind, eps, norm,
                                                                         method):
    folder = tmp_path_factory.mktemp("net")
    model, shape = random_net(seed, kind)
    proto, proto16 = artifact(model, shape, folder)
    rng = np.random.default_rng(seed)
    x = rng.random((4, *shape)).astype(np.float32).astype(np.float64)
    engines = {"fp32": Engine(from_onnx(proto)), "fp16": Engine(from_onnx(proto16))}
    sessions = {"fp32": ort_session(folder / "model.onnx"), "fp16": ort_session(folder / "model.fp16.onnx")}
    models = {"fp32": ARITHMETIC_MODELS.get("fp32"), "fp16": ARITHMETIC_MODELS.get("fp16")}
    for precision, engine in engines.items():
        labels = engine.output(torch.from_numpy(x)).argmax(1).numpy()
        with torch.no_grad():
            ball = Ball(torch.from_numpy(x), eps, norm)
            lo, hi = engine.bounds(ball, method)[engine.graph.output]
            table = engine.bounds(ball, method)
            e = engine.errors(magnitudes(table), models[precision])[engine.graph.output]
        certs = certify_points(engine, x, labels, eps, norm, method, [ARITHMETIC_MODELS.get("real"),
                                                                       models[precision]])
        for i in range(len(x)):
            points = np.concatenate([sample_ball(rng, x[i], eps, norm, 400),
                                     pgd_best(model, x[i], int(labels[i]), eps, norm)[None]]).astype(np.float32)
            # The artifact takes float32: keep the rounded points that are still inside the ball.
            d = (points.astype(np.float64) - x[i]).reshape(len(points), -1)
            keep = (np.abs(d).max(1) if norm == "inf" else np.linalg.norm(d, axis=1)) <= eps
            assert keep.sum() >= len(points) // 2
            points = points[keep]
            exact = engine.output(torch.from_numpy(points.astype(np.float64))).numpy()
            device = run_onnx(sessions[precision], points).astype(np.float64)
            assert np.all(exact >= lo[i].numpy()) and np.all(exact <= hi[i].numpy())
            assert np.all(device >= (lo[i] - e[i]).numpy()) and np.all(device <= (hi[i] + e[i]).numpy())
            if certs.certified["real"][i]:
                assert np.all(exact.argmax(1) == labels[i])
            if certs.certified[models[precision].name][i]:
                assert np.all(device.argmax(1) == labels[i])


def test_an_fp16_artifact_that_flips_inside_a_real_certified_ball_is_not_certified_for_fp16(tmp_path):
    # Logits x and (1 + 2^-13)·x: class 1 wins by 2^-13·x over the real numbers; binary16 rounds the weight to 1
    # (its spacing at 1 is 2^-10), so the fp16 artifact ties and its argmax is class 0 everywhere.
    layer = nn.Sequential(nn.Flatten(), nn.Linear(1, 2, bias=False)).eval()
    with torch.no_grad():
        layer[1].weight.copy_(torch.tensor([[1.0], [1.0 + 2.0 ** -13]]))
    proto, proto16 = artifact(layer, (1, 1, 1), tmp_path)
    x, labels, eps = np.full((1, 1, 1, 1), 0.5), np.array([1]), 0.1
    points = sample_ball(np.random.default_rng(0), x[0], eps, "inf", 64).astype(np.float32)
    assert np.all(run_onnx(ort_session(tmp_path / "model.fp16.onnx"), points).argmax(1) == 0)  # the flip is real
    real = ARITHMETIC_MODELS.get("real")
    fp32 = certify_points(Engine(from_onnx(proto)), x, labels, eps, "inf", "crown",
                          [real, ARITHMETIC_MODELS.get("fp32")])
    assert fp32.certified["real"].all() and fp32.certified["fp32"].all()
    fp16 = certify_points(Engine(from_onnx(proto16)), x, labels, eps, "inf", "crown",
                          [real, ARITHMETIC_MODELS.get("fp16-fp32acc"), ARITHMETIC_MODELS.get("fp16")])
    assert not fp16.certified["fp16-fp32acc"].any() and not fp16.certified["fp16"].any()
    assert not fp16.certified["real"].any()  # the artifact's own (rounded) weights tie: not even its real function


def test_worst_case_fp16_accumulation_is_named_vacuous_at_real_fan_ins(tmp_path):
    wide = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)).eval()
    proto, proto16 = artifact(wide, (3, 32, 32), tmp_path)
    x = np.random.default_rng(0).random((2, 3, 32, 32))
    engine = Engine(from_onnx(proto16))
    certs = certify_points(engine, x, engine.output(torch.from_numpy(x)).argmax(1).numpy(), 0.0, "inf", "ibp",
                           [ARITHMETIC_MODELS.get("fp16"), ARITHMETIC_MODELS.get("fp16-fp32acc")])
    assert "fp16" in certs.vacuous and "2048" in certs.vacuous["fp16"] and not certs.certified["fp16"].any()
    assert "fp16-fp32acc" not in certs.vacuous


def test_certified_radius_is_certified_and_grows_with_the_method():
    model, shape = random_net(3, "mlp")
    engine = Engine(from_onnx(simplify(to_onnx(model, shape, 13))))
    x = np.random.default_rng(3).random((4, *shape))
    labels = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    real = ARITHMETIC_MODELS.get("real")
    radius = {m: certified_radius(engine, x, labels, "inf", m, real, high=0.2, steps=10) for m in ("ibp", "crown")}
    assert np.all(radius["crown"] >= radius["ibp"] - 0.2 * 2.0 ** -10)
    for i, r in enumerate(radius["crown"]):
        if r > 0:
            assert certify_points(engine, x[i:i + 1], labels[i:i + 1], float(r), "inf", "crown", [real]).certified[
                "real"].all()


def test_bad_input_is_one_line():
    model, shape = random_net(0, "mlp")
    engine = Engine(from_onnx(simplify(to_onnx(model, shape, 13))))
    x = np.random.default_rng(0).random((2, *shape))
    real = [ARITHMETIC_MODELS.get("real")]
    with pytest.raises(EdgeRobustError, match="eps must lie in"):
        certify_points(engine, x, np.array([0, 1]), -0.1, "inf", "crown", real)
    with pytest.raises(EdgeRobustError, match="eps must lie in"):
        certify_points(engine, x, np.array([0, 1]), 1.5, "inf", "crown", real)
    with pytest.raises(EdgeRobustError, match="label 7 is out of range for 4 classes"):
        certify_points(engine, x, np.array([0, 7]), 0.1, "inf", "crown", real)
    sig = simplify(to_onnx(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softmax(1), nn.LogSoftmax(1)).eval(),
                           (1, 2, 2), 13))
    with pytest.raises(BoundError, match="operators LogSoftmax, Softmax have no bound rule"):
        Engine(from_onnx(sig))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), optimised=st.booleans())
def test_the_relu_fast_path_is_the_general_clip_relaxation_exactly(seed, optimised):
    from edgerobust.bounds.rules.activation import _clip_relaxation, _relu_relaxation

    g = torch.Generator().manual_seed(seed)
    lo = torch.randn(500, dtype=torch.float64, generator=g)
    hi = lo + torch.rand(500, dtype=torch.float64, generator=g) * 2
    lo[:20], hi[:20] = 0.0, hi[:20].abs()  # the kink at an end of the interval
    lo[20:40], hi[20:40] = -lo[20:40].abs(), 0.0
    alpha = torch.rand(500, dtype=torch.float64, generator=g) if optimised else None
    for fast, general in zip(_relu_relaxation(lo, hi, alpha), _clip_relaxation(lo, hi, 0.0, float("inf"), alpha),
                             strict=True):
        assert torch.equal(fast, general)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), stride=st.integers(1, 3), pad=st.integers(0, 2), size=st.integers(5, 9))
def test_the_transposed_convolution_is_the_autograd_adjoint(seed, stride, pad, size):
    from edgerobust.bounds import RULES
    from edgerobust.bounds.graph import Node
    from edgerobust.bounds.rules.base import Linear, float64_gamma

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=g)
    node = Node("Conv", ["x", "w"], ["y"], {"pads": [pad, pad + 1, pad, pad], "strides": [stride, stride]}, "c",
                {"w": w})
    rule = RULES.get("Conv")
    out = rule.forward(node, torch.zeros(1, 2, size, size + 1, dtype=torch.float64))
    flat = torch.randn(3, *out.shape[1:], dtype=torch.float64, generator=g)
    fast = rule.adjoint(node, flat, [(2, size, size + 1)])[0]
    slow = Linear.adjoint(rule, node, flat, [(2, size, size + 1)])[0]
    # both sum the same products in some order: within γ_n of the summed magnitudes (Higham (3.5), float64)
    magnitude = Linear.adjoint(rule, Node("Conv", ["x", "w"], ["y"], node.attrs, "c", {"w": w.abs()}), flat.abs(),
                               [(2, size, size + 1)])[0]
    assert fast.shape == slow.shape
    assert torch.all((fast - slow).abs() <= 2 * float64_gamma(w[0].numel()) * magnitude)


@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]), norm=st.sampled_from(["inf", "2"]),
       budget=st.sampled_from([1 << 12, 1 << 30]))
def test_crown_margins_hold_at_sampled_and_attacked_points_with_a_radius_per_point(seed, kind, norm, budget):
    # one radius per point, and a budget small enough to split the packed rows into many chunks
    model, shape = random_net(seed, kind)
    engine = Engine(from_onnx(simplify(to_onnx(model, shape, 13))))
    rng = np.random.default_rng(seed)
    x = rng.random((3, *shape))
    eps = np.array([0.004, 0.02, 0.08])
    labels = engine.output(torch.from_numpy(x)).argmax(1)
    with torch.no_grad():
        ibp, _ = engine.margins(Ball(torch.from_numpy(x), torch.from_numpy(eps), norm), labels, "ibp")
        crown, _ = engine.margins(Ball(torch.from_numpy(x), torch.from_numpy(eps), norm), labels, "crown", budget)
    assert torch.all(crown >= ibp)
    for i in range(3):
        points = np.concatenate([sample_ball(rng, x[i], eps[i], norm, 300),
                                 pgd_best(model, x[i], int(labels[i]), eps[i], norm)[None]])
        # PGD's x + δ may round just outside the ball, where a tight bound need not hold: back into the box
        # the engine bounds (the same float64 rounding of x ± ε), and for L2 keep the points inside
        points = np.clip(points, np.clip(x[i] - eps[i], 0, 1), np.clip(x[i] + eps[i], 0, 1))
        if norm == "2":
            points = points[np.linalg.norm((points - x[i]).reshape(len(points), -1), axis=1) <= eps[i]]
        out = engine.output(torch.from_numpy(points))
        margin = out[:, labels[i]].unsqueeze(1) - out  # [points, K]; the label's own column is 0 <= +inf
        others = torch.arange(out.shape[1]) != labels[i]
        assert torch.all(margin[:, others] >= crown[i, others].unsqueeze(0))
