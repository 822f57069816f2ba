"""Randomized smoothing's statistics (Cohen et al. 2019): bounds, decisions, and the soundness of CERTIFY's radius."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta, norm

from edgerobust.runner.noise import PHASES, noise_batches
from edgerobust.smoothing import (
    ABSTAIN,
    average_certified_radius,
    certified_accuracy,
    certify_counts,
    certify_points,
    lower_confidence_bound,
    predict_counts,
    radius_ceiling,
)


@given(n=st.integers(1, 10**6), frac=st.floats(0, 1), alpha=st.floats(1e-6, 0.5))
@settings(max_examples=60, deadline=None)
def test_lower_bound_is_scipys_beta_quantile(n, frac, alpha):
    k = int(round(frac * n))
    expected = 0.0 if k == 0 else beta.ppf(alpha, k, n - k + 1)
    assert lower_confidence_bound(k, n, alpha) == expected
    assert lower_confidence_bound(k, n, alpha) <= k / n


def test_an_always_right_model_certifies_the_ceiling():
    cls, radius = certify_counts([0, 100, 0], [0, 100_000, 0], 0.25, 0.001)
    assert cls == 1 and round(radius, 4) == 0.9529
    assert round(radius_ceiling(0.5, 100_000, 0.001), 4) == 1.9057
    assert radius == pytest.approx(0.25 * norm.ppf(0.001 ** (1 / 100_000)), rel=1e-9)


def test_a_fifty_fifty_model_abstains():
    assert certify_counts([50, 50], [50_000, 50_000], 0.25, 0.001) == (ABSTAIN, 0.0)
    assert predict_counts([50_000, 50_000], 0.001) == ABSTAIN
    assert predict_counts([60_000, 40_000], 0.001) == 0
    assert predict_counts([0, 0, 9], 0.001) == ABSTAIN  # p = 2·2⁻⁹ > α
    assert predict_counts([0, 0, 20], 0.001) == 2  # p = 2·2⁻²⁰


def test_selection_decides_the_class_not_estimation():
    # the class picked from the n0 samples is bounded, even when the estimation samples favour another
    assert certify_counts([90, 10], [100, 900], 0.5, 0.001) == (ABSTAIN, 0.0)


class LinearCounter:
    """f(x) = 1 if w·x + b > 0 else 0, votes counted on the protocol's noise: the exact smoothed classifier's
    probability is Φ((w·x + b) / (σ‖w‖)), and the exact boundary distance is |w·x + b| / ‖w‖."""
    num_classes = 2

    def __init__(self, w, b, sigma, seed):
        self.w, self.b, self.sigma, self.seed = w, b, sigma, seed

    def counts(self, x, rows, phase, n):
        out = np.zeros((len(rows), 2), np.int64)
        for i, row in enumerate(rows):
            for noisy in noise_batches(x[i], self.sigma, n, 4096, self.seed, row, PHASES[phase]):
                score = noisy.reshape(len(noisy), -1).astype(np.float64) @ self.w + self.b
                out[i] += np.bincount((score > 0).astype(int), minlength=2)
        return out

    def describe(self):
        return {}


def test_certified_radius_exceeds_the_true_distance_at_most_alpha_often():
    """On a linear classifier the smoothed classifier is the linear one and its exact robust radius is the distance
    to the hyperplane; with α = 0.05 over 400 seeded points the certified radius may exceed it (a false
    certificate) in at most α of the trials, up to a binomial margin (P[Bin(400, 0.05) > 35] < 1e-4)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(12)
    w /= np.linalg.norm(w)
    sigma, alpha, trials = 0.5, 0.05, 400
    x = rng.uniform(0, 1, (trials, 1, 3, 4)).astype(np.float32)
    b = -float(np.median(x.reshape(trials, -1) @ w)) + 0.3  # most points on one side, near the boundary
    labels = (x.reshape(trials, -1).astype(np.float64) @ w + b > 0).astype(int)
    points = certify_points(LinearCounter(w, b, sigma, seed=11), x, labels, list(range(trials)), sigma=sigma,
                            alpha=alpha, n0=20, n=200)
    distance = np.abs(x.reshape(trials, -1).astype(np.float64) @ w + b)
    false = sum(p["prediction"] != ABSTAIN and (p["prediction"] != p["label"] or p["radius"] > d)
                for p, d in zip(points, distance, strict=True))
    certified = sum(p["prediction"] != ABSTAIN for p in points)
    assert certified > trials // 2  # the test has teeth: most points get a certificate
    assert false <= 35


@given(st.lists(st.tuples(st.integers(-1, 3), st.floats(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_acr_is_the_mean_radius_with_wrong_and_abstained_at_zero(rows):
    predictions, radii, labels = zip(*rows, strict=True)
    radii = [0.0 if p == ABSTAIN else r for p, r in zip(predictions, radii, strict=True)]
    expected = sum(r if p == y else 0.0 for p, r, y in zip(predictions, radii, labels, strict=True)) / len(rows)
    assert average_certified_radius(predictions, radii, labels) == pytest.approx(expected, rel=1e-12, abs=0)


@given(st.lists(st.tuples(st.integers(-1, 3), st.floats(0, 3), st.integers(0, 3)), min_size=1, max_size=40),
       st.lists(st.floats(0, 4), min_size=1, max_size=12))
def test_certified_accuracy_never_rises_with_the_radius(rows, grid):
    predictions, radii, labels = zip(*rows, strict=True)
    curve = certified_accuracy(predictions, radii, labels, sorted(grid))
    assert all(a >= b for a, b in zip(curve, curve[1:], strict=False))
    assert curve[0] <= np.mean(np.asarray(predictions) == np.asarray(labels))
