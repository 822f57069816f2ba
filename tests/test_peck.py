"""Peck's lower bounds (certify/peck.py): thesis mode as published, with the counterexamples where it is not a lower
bound pinned (a perturbation shorter than the thesis's κ flips the prediction, and the attack-based checker finds
it), and sound mode with zero violations (the exact minimal perturbation of linear classifiers, attacks and samples
on random networks)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_bounds import random_net
from torch import nn

from edgerobust.bounds import Engine, from_onnx
from edgerobust.bounds.rules import SLACK
from edgerobust.certify.peck import (
    THESIS_DERIVATIVES,
    PeckError,
    check_against_attacks,
    check_attacks,
    mlp_m,
    peck_bounds,
    thm42,
    violations,
)
from edgerobust.errors import EdgeRobustError
from edgerobust.export.onnx_export import simplify, to_onnx

# the float64 rounding of a handful of operations (a norm, a division, a difference), far above it and far below
# any difference the tests look for
F64 = 1e-12


def engine_of(model, shape):
    return Engine(from_onnx(simplify(to_onnx(model.eval(), shape, 13))))


def predicted(engine, x):
    return engine.output(torch.from_numpy(x)).argmax(1).numpy()


def flips(engine, x, label):
    return int(engine.output(torch.from_numpy(x)).argmax(1)[0]) != label


def linear_head(layer: nn.Linear, rows, bias):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def test_both_modes_are_the_exact_minimal_perturbation_of_a_linear_classifier():
    # Lemma 3.5 / Thm 3.6: exact for a linear classifier; the sound mode is that, less the engine's slack
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    engine = engine_of(model, (3, 2, 2))
    x = np.random.default_rng(3).random((8, 3, 2, 2))
    labels = predicted(engine, x)
    w = model[1].weight.detach().double()
    logits = engine.output(torch.from_numpy(x))
    exact = []
    for i, c in enumerate(labels):
        gaps = [(logits[i, c] - logits[i, j]) / (w[c] - w[j]).norm() for j in range(4) if j != c]
        exact.append(float(min(gaps)))
    exact = np.array(exact)
    thesis, sound = peck_bounds(engine, x, labels, "thesis"), peck_bounds(engine, x, labels, "sound")
    assert np.allclose(thesis, exact, rtol=F64, atol=0)
    assert np.all(sound <= exact) and np.all(sound >= exact * (1 - 64 * SLACK))


def conv_counterexample():
    """Conv(ones 3×3) on a 5×5 input, then a head reading u·conv(x) with u = ones/3 (‖u‖ = 1): the thesis's
    δ/‖W‖_F = δ/3, the true minimal perturbation δ/‖convᵀu‖ = δ/(19/3)."""
    conv = nn.Conv2d(1, 1, 3, bias=False)
    head = nn.Linear(9, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    linear_head(head, [[0.0] * 9, [1 / 3] * 9], [0.0, -13.5 - 0.1])  # at x = 0.5: u·conv(x) = 13.5, margin 0.1
    return nn.Sequential(conv, nn.Flatten(), head), (1, 5, 5)


def test_thesis_conv_bound_thm_5_1_is_violated_and_the_sound_one_holds():
    model, shape = conv_counterexample()
    engine = engine_of(model, shape)
    x = np.full((1, *shape), 0.5)
    label = int(predicted(engine, x)[0])
    assert label == 0
    u = model[2].weight.detach().double()[1] - model[2].weight.detach().double()[0]  # the head's difference row
    g = torch.nn.functional.conv_transpose2d(u.reshape(1, 1, 3, 3), torch.ones(1, 1, 3, 3, dtype=torch.float64))
    g = g.numpy()
    assert math.isclose(float(np.linalg.norm(g)), 19 / 3, rel_tol=1e-6)  # u is 1/3 rounded to float32
    out = engine.output(torch.from_numpy(x))[0]
    margin = float(out[0] - out[1])
    exact = margin / float(np.linalg.norm(g))  # the minimal perturbation of this linear classifier
    thesis = peck_bounds(engine, x, [label], "thesis")[0]
    sound = peck_bounds(engine, x, [label], "sound")[0]
    assert math.isclose(thesis, margin / float(u.norm()) / 3, rel_tol=F64)  # δ / ‖W‖_F
    assert thesis > 2 * exact  # 19/9 times the truth
    step = x + g / np.linalg.norm(g) * exact * (1 + 1e-9)  # along convᵀu: just past the boundary, inside [0, 1]
    assert flips(engine, step, label) and np.linalg.norm(step - x) < thesis
    assert sound <= exact
    # the checker finds it with the attacks (DeepFool is exact in one step on a linear classifier)
    found = check_against_attacks(engine, x, np.array([label]), np.array([thesis]), ("deepfool",))
    assert found["violations"] == 1 and found["per_point"][0] < thesis
    assert check_against_attacks(engine, x, np.array([label]), np.array([sound]), ("deepfool",))["violations"] == 0


def bn_counterexample(a: float, kappa: float) -> Engine:
    """Identity batch norm (ε = 0) on two channels, then logit_1 = x_0 - (a + κ): at x = (a, 0) the head's exact
    bound is κ, reached by r = (κ, 0)."""
    def const(name, values):
        return numpy_helper.from_array(np.asarray(values, np.float32), name)

    nodes = [helper.make_node("BatchNormalization", ["input", "g", "b", "m", "v"], ["bn"], epsilon=0.0),
             helper.make_node("Flatten", ["bn"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "c"], ["output"], transB=1)]
    inits = [const("g", [1, 1]), const("b", [0, 0]), const("m", [0, 0]), const("v", [1, 1]),
             const("w", [[0, 0], [1, 0]]), const("c", [0, -(a + kappa)])]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 1, 1])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])], inits)
    return Engine(from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])))


def test_thesis_batchnorm_bound_thm_5_6_is_violated_as_in_the_digest():
    # the digest's case: identity BN, x = (10, 0), κ = 1: the thesis says √42/2 = 3.2404, a step of norm 1 flips
    engine = bn_counterexample(10.0, 1.0)
    x = np.array([[[[10.0]], [[0.0]]]])
    assert int(predicted(engine, x)[0]) == 0
    thesis = peck_bounds(engine, x, [0], "thesis")[0]
    assert math.isclose(thesis, math.sqrt(42) / 2, rel_tol=F64)
    step = x + np.array([[[[1.0 + 1e-9]], [[0.0]]]])
    assert flips(engine, step, 0) and np.linalg.norm(step - x) < thesis
    assert violations(np.array([thesis]), np.array([np.linalg.norm(step - x)]))["violations"] == 1
    with pytest.raises(PeckError, match=r"pixels in \[0, 1\]"):  # the sound mode's balls live in the pixel box
        peck_bounds(engine, x, [0], "sound")


def test_thesis_batchnorm_violation_is_found_by_the_attacks_inside_the_pixel_box():
    engine = bn_counterexample(0.5, 0.1)  # x = (0.5, 0): the thesis says √0.22/2 = 0.2345 > 0.1
    x = np.array([[[[0.5]], [[0.0]]]])
    thesis = peck_bounds(engine, x, [0], "thesis")
    assert math.isclose(thesis[0], math.sqrt(0.22) / 2, rel_tol=1e-6)  # float32 constants: 0.5, 0.6
    found = check_against_attacks(engine, x, np.array([0]), thesis, ("deepfool",))
    assert found["violations"] == 1 and found["violating_points"] == [0]
    sound = peck_bounds(engine, x, [0], "sound")
    assert check_against_attacks(engine, x, np.array([0]), sound, ("deepfool",))["violations"] == 0


def test_thesis_mlp_block_thm_4_2_is_violated_on_relu():
    # h = relu(x - 0.21), logits (0.5, h): at x = 0.2 the unit is off (J = 0), δ = 0.5, n = 1 and Alg. 4.1 with
    # ReLU's B = 1 gives M = 1, so Thm 4.2 says √(2·0.5) = 1; yet x = 0.71 (a step of 0.51) flips the prediction
    hidden, head = nn.Linear(1, 1), nn.Linear(1, 2)
    linear_head(hidden, [[1.0]], [-0.21])
    linear_head(head, [[0.0], [1.0]], [0.5, 0.0])
    engine = engine_of(nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), head), (1, 1, 1))
    x = np.array([[[[0.2]]]])
    assert int(predicted(engine, x)[0]) == 0
    relu = [i for i, n in enumerate(engine.graph.nodes) if n.op == "Relu"]
    gemm = [i for i, n in enumerate(engine.graph.nodes) if n.op == "Gemm"]
    assert mlp_m(engine, [(gemm[0], relu[0])]) == 1.0
    thesis = peck_bounds(engine, x, [0], "thesis")[0]
    assert math.isclose(thesis, 1.0, rel_tol=F64)
    step = np.array([[[[0.71 + 1e-6]]]])
    assert flips(engine, step, 0) and abs(step - x).max() < thesis
    # the gradient is 0 at a dead unit, so gradient attacks do not move; the checker takes the step itself
    assert violations(np.array([thesis]), np.array([float(abs(step - x).max())]))["violations"] == 1
    sound = peck_bounds(engine, x, [0], "sound")[0]
    assert sound <= 0.51 + 1e-6


def test_thesis_mlp_block_thm_4_2_is_violated_with_the_tanh_table_entry():
    # h = tanh(x - 1.2), logits (tanh(-0.65), h): at x = 0.2 (z = -1) the prediction flips at x = 0.55 (a step of 0.35)
    # while tanh'' stays above the table's 0.3849 all the way, so the thesis's κ (0.385) exceeds 0.35; with the true
    # max|tanh''| = 4/(3√3) the same formula gives 0.344, below it
    hidden, head = nn.Linear(1, 1), nn.Linear(1, 2)
    linear_head(hidden, [[1.0]], [-1.2])
    linear_head(head, [[0.0], [1.0]], [math.tanh(-0.65), 0.0])
    engine = engine_of(nn.Sequential(nn.Flatten(), hidden, nn.Tanh(), head), (1, 1, 1))
    x = np.array([[[[0.2]]]])
    assert int(predicted(engine, x)[0]) == 0
    thesis = peck_bounds(engine, x, [0], "thesis")[0]
    b = float(head.bias.detach().double()[0])
    z = 0.2 + float(hidden.bias.detach().double()[0])  # the pre-activation at x (float32 bias, float64 input)
    flip = math.atanh(b) - z  # the exact step at which h reaches the class-0 logit
    assert 0.34 < flip < 0.36 < thesis  # (float32 weights: 0.35 and 0.385 up to their rounding)
    step = x + flip * (1 + 1e-6)
    assert flips(engine, step, 0)
    found = check_against_attacks(engine, x, np.array([0]), np.array([thesis]), ("fgs-search",))  # Peck's own
    assert found["violations"] == 1 and found["per_point"][0] < thesis
    jnorm = torch.tensor([1 - math.tanh(z) ** 2], dtype=torch.float64)
    delta = torch.tensor([b - math.tanh(z)], dtype=torch.float64)
    true_b = float(thm42(delta, jnorm, 4 / (3 * math.sqrt(3)), 1)[0])
    assert true_b < flip and math.isclose(thesis, float(thm42(delta, jnorm, THESIS_DERIVATIVES["Tanh"][1], 1)[0]),
                                          rel_tol=F64)


def test_thesis_tanh_table_entry_is_half_the_true_second_derivative_bound():
    t = torch.linspace(-3, 3, 600_001, dtype=torch.float64)
    second = (-2 * torch.tanh(t) * (1 - torch.tanh(t) ** 2)).abs().max()
    assert math.isclose(float(second), 4 / (3 * math.sqrt(3)), rel_tol=1e-9)
    assert THESIS_DERIVATIVES["Tanh"][1] == pytest.approx(float(second) / 2, rel=1e-9)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]))
def test_sound_bounds_have_no_violations(seed, kind):
    model, shape = random_net(seed, kind)
    engine = engine_of(model, shape)
    rng = np.random.default_rng(seed)
    x = rng.random((4, *shape))
    labels = predicted(engine, x)
    kappa = peck_bounds(engine, x, labels, "sound")
    assert np.all(kappa >= 0)
    assert check_against_attacks(engine, x, labels, kappa)["violations"] == 0
    if kind != "res":  # the thesis chain runs on these (Thm 4.2's block on the MLP, Alg. 5.1 on the CNN)
        assert np.all(np.isfinite(peck_bounds(engine, x, labels, "thesis")))
    for i in range(4):  # points on the sphere of radius κ keep the prediction
        d = rng.normal(size=(300, *shape))
        d *= kappa[i] / np.linalg.norm(d.reshape(300, -1), axis=1).reshape(-1, 1, 1, 1)
        assert np.all(predicted(engine, x[i] + d) == labels[i])


def test_violations_counts_only_found_perturbations_shorter_than_the_bound():
    found = violations(np.array([1.0, 2.0, 0.5, 3.0]), np.array([0.9, np.nan, 0.5, 4.0]))
    assert found["violations"] == 1 and found["violating_points"] == [0]
    assert found["worst_ratio"] == pytest.approx(1 / 0.9, rel=F64)


def test_thesis_mode_refuses_residual_graphs_and_unknown_modes_in_one_line():
    model, shape = random_net(0, "res")
    engine = engine_of(model, shape)
    x = np.random.default_rng(0).random((1, *shape))
    residual = r"no rule for Add .* \(residual connections are not in the thesis\); use --peck-mode sound"
    with pytest.raises(PeckError, match=residual):
        peck_bounds(engine, x, predicted(engine, x), "thesis")
    with pytest.raises(PeckError, match="unknown Peck mode 'paper'; choose one of thesis, sound"):
        peck_bounds(engine, x, predicted(engine, x), "paper")


def test_the_checker_takes_registered_minimal_attacks_only():
    assert check_attacks(("fgs-search", "deepfool")) == ("fgs-search", "deepfool")
    with pytest.raises(PeckError, match="--peck-attacks pgd is not a minimal-perturbation attack; choose among"):
        check_attacks(("pgd",))
    with pytest.raises(EdgeRobustError, match="unknown attack 'nope'"):
        check_attacks(("nope",))
    with pytest.raises(PeckError, match="needs at least one minimal attack"):
        check_attacks(())
