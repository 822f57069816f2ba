"""Per-logit intervals of a certificate (certify/core.py `logit_bounds`, `certify_points(intervals=True)`): every
logit of the exact network and of the artifacts run by onnxruntime stays inside its interval over the ball, CROWN's
intervals are never wider than IBP's, and certificates.json keeps them for the certified points only."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_bounds import artifact, pgd_best, random_net, sample_ball

from edgerobust.bounds import ARITHMETIC_MODELS, Engine, from_onnx
from edgerobust.certify.api import outward, point_bounds
from edgerobust.certify.core import certify_points
from edgerobust.export.parity import ort_session, run_onnx


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "conv", "res"]),
       eps=st.sampled_from([0.005, 0.02]), norm=st.sampled_from(["inf", "2"]))
def test_every_logit_stays_in_its_interval_on_the_artifacts(tmp_path_factory, seed, kind, eps, norm):
    folder = tmp_path_factory.mktemp("net")
    model, shape = random_net(seed, kind)
    proto, proto16 = artifact(model, shape, folder)
    rng = np.random.default_rng(seed)
    x = rng.random((3, *shape)).astype(np.float32).astype(np.float64)
    cases = {"fp32": (Engine(from_onnx(proto)), ort_session(folder / "model.onnx"), "fp32"),
             "fp16": (Engine(from_onnx(proto16)), ort_session(folder / "model.fp16.onnx"), "fp16")}
    for engine, session, name in cases.values():
        labels = engine.output(torch.from_numpy(x)).argmax(1).numpy()
        models = [ARITHMETIC_MODELS.get("real"), ARITHMETIC_MODELS.get(name)]
        ibp = certify_points(engine, x, labels, eps, norm, "ibp", models, intervals=True).intervals
        crown = certify_points(engine, x, labels, eps, norm, "crown", models, intervals=True).intervals
        for kept in ("real", name):  # (NaN on both sides where the arithmetic is vacuous)
            vacuous = np.isnan(ibp[kept][0])
            assert np.array_equal(vacuous, np.isnan(crown[kept][0]))
            assert np.all(crown[kept][0][~vacuous] >= ibp[kept][0][~vacuous])
            assert np.all(crown[kept][1][~vacuous] <= ibp[kept][1][~vacuous])
        for i in range(len(x)):
            points = np.concatenate([sample_ball(rng, x[i], eps, norm, 300),
                                     pgd_best(model, x[i], int(labels[i]), eps, norm)[None]]).astype(np.float32)
            d = (points.astype(np.float64) - x[i]).reshape(len(points), -1)
            points = points[(np.abs(d).max(1) if norm == "inf" else np.linalg.norm(d, axis=1)) <= eps]
            exact = engine.output(torch.from_numpy(points.astype(np.float64))).numpy()
            device = run_onnx(session, points).astype(np.float64)
            lo, hi = crown["real"][0][i], crown["real"][1][i]
            assert np.all(exact >= lo) and np.all(exact <= hi)
            lo, hi = crown[name][0][i], crown[name][1][i]
            if np.isfinite(lo).all():  # worst-case fp16 accumulation may be vacuous (NaN): nothing claimed
                assert np.all(device >= lo) and np.all(device <= hi)


def test_certificates_keep_intervals_for_certified_points_only():
    bounds = np.array([[np.nan, 0.5], [np.nan, -1.0]])
    spans = (np.array([[0.0, -1.0], [0.5, np.nan]]), np.array([[2.0, 1.0], [1.5, np.nan]]))
    out = point_bounds(np.array([True, False]), bounds, spans)
    assert out["logit_lower"] == [[0.0, -1.0], None] and out["logit_upper"] == [[2.0, 1.0], None]
    assert out["margin_lower"] == [[None, 0.5], [None, -1.0]]


@settings(max_examples=300, deadline=None)
@given(v=st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False, allow_subnormal=False))
def test_written_bounds_are_rounded_outward_to_nine_digits(v):
    low, high = outward(v, down=True), outward(v, down=False)
    assert low <= v <= high
    # the nearest 9-digit decimal is within half a unit of the 9th digit, one more unit crosses: 1.5e-8 relative
    assert v - low <= 1.5e-8 * abs(v) * (1 + 1e-9) and high - v <= 1.5e-8 * abs(v) * (1 + 1e-9)
    assert len(repr(low).replace("-", "").replace(".", "").split("e")[0].strip("0")) <= 9
    assert outward(float("nan"), True) is None and outward(float("inf"), False) is None
