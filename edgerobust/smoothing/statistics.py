"""The statistics of randomized smoothing (Cohen et al. 2019; Song's thesis, ch. 2, eq. 2.6): from vote counts only.

CERTIFY takes the class most voted among n0 selection samples, then bounds its probability from below with the
Clopper-Pearson interval on n independent estimation samples; below 1/2 it abstains, else the L2 radius is
σ·Φ⁻¹(p_A). PREDICT returns the top class when a two-sided binomial test of its count against the runner-up's rejects
a tie at level α (α − n·p_slack under sound noise), else abstains. Both need nothing but counts, so the same
functions serve every runtime.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import beta, binomtest, norm

ABSTAIN = -1


def lower_confidence_bound(successes: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper-Pearson lower bound on a binomial proportion: Beta(α; k, n − k + 1), 0 at k = 0."""
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, n - successes + 1))


def certify_counts(counts0: Sequence[int], counts: Sequence[int], sigma: float, alpha: float,
                   p_slack: float = 0.0, radius_slack: float = 0.0) -> tuple[int, float]:
    """(class, L2 radius) of CERTIFY from selection and estimation counts; (ABSTAIN, 0.0) when p_A < 1/2.

    A sound certificate (smoothing/sound.py) gives up `p_slack` of p_A's lower bound (the sampler's total variation
    to the distribution certified) and `radius_slack` of the radius (the point's distance to the grid point
    certified); it abstains when less than nothing is left."""
    top = int(np.argmax(np.asarray(counts0)))
    counts = np.asarray(counts)
    p_lower = lower_confidence_bound(int(counts[top]) if top < len(counts) else 0, int(counts.sum()), alpha) - p_slack
    if p_lower < 0.5:
        return ABSTAIN, 0.0
    radius = float(sigma * norm.ppf(p_lower)) - radius_slack
    return (top, radius) if radius >= 0 else (ABSTAIN, 0.0)


def predict_level(n: int, alpha: float, p_slack: float = 0.0) -> float:
    """The level PREDICT tests at so that it errs with probability at most α: α − n·p_slack.

    Under sound noise (smoothing/sound.py) each of the n samples is drawn from a distribution within `p_slack` in
    total variation of the one certified, so the n samples together are within n·p_slack of it, and any event —
    PREDICT returning a class other than g(x) — is at most n·p_slack more likely than under the certified
    distribution, where Cohen et al.'s test at level α' errs with probability at most α'. Below 0: abstain always."""
    return float(alpha - n * p_slack)


def predict_counts(counts: Sequence[int], alpha: float, p_slack: float = 0.0) -> int:
    """PREDICT's answer from its counts: the top class if the binomial test of n_A against n_B rejects p = 1/2 at
    `predict_level` (α, less n·p_slack under sound noise)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    level = predict_level(total, alpha, p_slack)
    if total == 0 or level <= 0:
        return ABSTAIN
    order = np.argsort(-counts, kind="stable")
    n_a = int(counts[order[0]])
    n_b = int(counts[order[1]]) if len(counts) > 1 else 0
    return int(order[0]) if binomtest(n_a, n_a + n_b, 0.5).pvalue <= level else ABSTAIN


def certified_radii(predictions: Sequence[int], radii: Sequence[float], labels: Sequence[int]) -> np.ndarray:
    """Each point's certified radius around its true label: its radius when certified correctly, else 0."""
    predictions, radii, labels = np.asarray(predictions), np.asarray(radii, np.float64), np.asarray(labels)
    return np.where(predictions == labels, radii, 0.0)


def certified_accuracy(predictions: Sequence[int], radii: Sequence[float], labels: Sequence[int],
                       grid: Sequence[float]) -> list[float]:
    """Fraction of points certified with the correct class at radius ≥ r, for each r of the grid."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(labels) == 0:
        return [0.0 for _ in grid]
    correct = predictions == labels
    radii = np.asarray(radii, np.float64)
    return [float(np.mean(correct & (radii >= r))) for r in grid]


def average_certified_radius(predictions: Sequence[int], radii: Sequence[float], labels: Sequence[int]) -> float:
    """ACR: the mean certified radius, 0 for wrong or abstained points (Zhai et al. 2020; Song Table 5.1)."""
    values = certified_radii(predictions, radii, labels)
    return float(values.mean()) if len(values) else 0.0


def radius_ceiling(sigma: float, n: int, alpha: float) -> float:
    """The largest radius n samples can certify: every vote for one class, p_A = α^(1/n)."""
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))
