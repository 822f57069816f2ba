"""Sound smoothing in floating point (Voráček & Hein): the float exploit exists under Gaussian noise, the sound
sampler draws exactly the rounded Gaussian, the model sees only grid points, and its certificates hold against the
exact smoothed probability of f∘R."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from edgerobust.runner.noise import generator
from edgerobust.smoothing.certify import certify_points
from edgerobust.smoothing.counters import SessionCounter
from edgerobust.smoothing.sound import (
    BITS,
    LEVELS,
    discrete_gaussian,
    grid_distance,
    sample_bins,
    sound_batches,
)
from edgerobust.smoothing.statistics import ABSTAIN


class Scalar:
    """A base classifier on one pixel (shape (1, 1, 1)) given as a function of the float32 value it receives."""

    def __init__(self, rule):
        self.rule = rule

    def infer(self, batch):
        values = np.asarray(batch, np.float32).reshape(len(batch))
        return np.eye(2)[self.rule(values).astype(int)]  # one-hot logits: class 1 where the rule holds


def on_lattice(values: np.ndarray) -> np.ndarray:
    """True where the float32 value is a multiple of 2^-24: every float32 in [0.5, 2) is, a real almost never is."""
    scaled = values.astype(np.float64) * 2.0 ** 24
    return scaled == np.floor(scaled)


@settings(max_examples=4, deadline=None)
@given(st.sampled_from([0.12, 0.25, 0.5, 1.0]))
def test_the_sampler_is_the_gaussian_rounded_to_the_grid(sigma):
    """P(J = j) = Φ((2j+1)/510σ) − Φ((2j−1)/510σ) up to float64's Φ (1e-16) and the 2^-60 thresholds; the
    probabilities sum to 1 exactly (integers out of 2^60); the TV bound is of their size."""
    dist = discrete_gaussian(sigma)
    j = np.arange(-dist.half_width, dist.half_width + 1)
    exact = norm.cdf((2 * j + 1) / (2 * LEVELS * sigma)) - norm.cdf((2 * j - 1) / (2 * LEVELS * sigma))
    assert np.abs(dist.probabilities() - exact).max() < 4e-16
    assert int(np.diff(np.concatenate([[0], dist.thresholds, [2 ** BITS]]).astype(object)).sum()) == 2 ** BITS
    assert 0 < dist.tv_bound < 1e-14


def reference_bins(seed: int, row: int, phase: int, sigma: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rule spelled out element by element (size a multiple of 4): u = w·2^44 + l with w the 16-bit words of
    the raw draws and l drawn from the child stream only where w's bucket holds a threshold; there the bin is
    searchsorted(T, u), elsewhere it is the same for l = 0 and l = 2^44 − 1, so the low bits could not change it.
    Returns the bins and where l was drawn."""
    t = discrete_gaussian(sigma).thresholds
    raw = generator(seed, row, phase).bit_generator.random_raw(size // 4)
    w = np.stack([(raw >> np.uint64(16 * k)) & np.uint64(0xFFFF) for k in range(4)], 1).reshape(-1).astype(np.int64)
    shift = BITS - 16
    lowest = np.searchsorted(t, w << shift, side="right")
    highest = np.searchsorted(t, (w << shift) + (1 << shift) - 1, side="right")
    inside = lowest != highest
    lows = np.random.PCG64(np.random.SeedSequence([seed, row, phase], spawn_key=(0,)))
    low = (lows.random_raw(int(inside.sum())) >> np.uint64(64 - shift)).astype(np.int64)
    expected = lowest.copy()
    expected[inside] = np.searchsorted(t, (w[inside] << shift) + low, side="right")
    return expected, inside


def test_the_lazy_draw_is_a_binary_search_on_60_bit_integers():
    """The sampler equals `reference_bins`; the low bits are drawn for a few elements only; tails are reached and
    the frequencies follow the table within 6 standard errors."""
    sigma, size = 0.25, 2_000_000
    dist = discrete_gaussian(sigma)
    bins = sample_bins(3, 0, 1, sigma, (size,))
    expected, inside = reference_bins(3, 0, 1, sigma, size)
    assert 0 < inside.mean() < 0.02
    assert np.array_equal(bins, expected)
    assert (np.abs(bins - dist.half_width) > 3 * sigma * LEVELS).any()  # the tails were reached
    p = dist.probabilities()
    freq = np.bincount(bins, minlength=len(p)) / size
    assert (np.abs(freq - p) <= 6 * np.sqrt(p * (1 - p) / size) + 1 / size).all()


@settings(max_examples=6, deadline=None)
@given(st.sampled_from([0.12, 0.5, 1.0, 2.0]), st.integers(0, 2 ** 32), st.integers(0, 1000), st.integers(0, 2))
def test_the_lazy_draw_follows_the_rule_at_every_sigma(sigma, seed, row, phase):
    """Wider σ puts more thresholds per bucket and more draws on the low bits: the sampler still equals the rule."""
    bins = sample_bins(seed, row, phase, sigma, (50_000,))
    assert np.array_equal(bins, reference_bins(seed, row, phase, sigma, 50_000)[0])


def test_the_model_sees_grid_points_that_move_with_the_point():
    """Every noisy input is float32(k)/255 for an integer k; moving the point by m grid steps moves every sample by
    exactly m steps (the base classifier cannot tell the centre from its neighbours); a point off the grid draws its
    grid point's samples and loses its distance to it."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (1, 4, 4))
    x = (a / 255).astype(np.float32)
    first = next(sound_batches(x, 0.5, 64, 64, 7, 2, 1))
    k = np.rint(first.astype(np.float64) * LEVELS)
    assert np.array_equal(first, k.astype(np.float32) / np.float32(LEVELS))
    moved = next(sound_batches(((a + 3) / 255).astype(np.float32), 0.5, 64, 64, 7, 2, 1))
    assert np.array_equal(np.rint(moved.astype(np.float64) * LEVELS), k + 3)
    off = x + np.float32(0.4 / 255)
    assert np.array_equal(next(sound_batches(off, 0.5, 64, 64, 7, 2, 1)), first)
    assert grid_distance(off) == pytest.approx(0.4 / 255 * 4, rel=1e-5)  # √16 pixels × 0.4/255
    assert grid_distance(x) <= 4 * 2.0 ** -25 + 1e-12  # float32(a/255) is a/255 to half an ulp (≤ 2^-25 below 1)


def test_gaussian_float_noise_certifies_a_classifier_that_real_noise_never_chooses():
    """Voráček & Hein's point: with x + ε rounded to float32, a classifier voting 1 on the 2^-24 lattice sees
    class 1 almost always around 0.75 (every float32 in [0.5, 2) is on it) and gets a large certificate, although
    under real Gaussian noise x + ε is on the lattice with probability 0: the smoothed classifier is 0 everywhere.
    The sound noise certifies f∘R instead, for which class 1 is the truth."""
    x, labels = np.full((1, 1, 1, 1), 0.75, np.float32), [1]
    lattice = Scalar(on_lattice)
    gaussian = certify_points(SessionCounter(lattice, 2, 0.1, 0, 1000, {}), x, labels, [0], sigma=0.1,
                              alpha=0.001, n0=100, n=2000)[0]
    assert gaussian["prediction"] == 1 and gaussian["radius"] > 0.2  # a false certificate
    sound = certify_points(SessionCounter(lattice, 2, 0.1, 0, 1000, {}, "sound"), x, labels, [0], sigma=0.1,
                           alpha=0.001, n0=100, n=2000)[0]
    assert sound["prediction"] == 1 and sound["p_slack"] > 0
    assert sound["radius_slack"] == pytest.approx(0.25 / 255, rel=1e-9)  # 0.75 = 191.25/255: a quarter step off


def exact_probability(rule, centre: float, sigma: float) -> float:
    """P(f(float32(round(255(centre + ε)))/255) = 1) for real ε ~ N(0, σ²), summed over the integers k."""
    k = np.arange(np.floor((centre - 12 * sigma) * LEVELS), np.ceil((centre + 12 * sigma) * LEVELS) + 1)
    mass = norm.cdf(((k + 0.5) / LEVELS - centre) / sigma) - norm.cdf(((k - 0.5) / LEVELS - centre) / sigma)
    return float(mass[rule(k.astype(np.float32) / np.float32(LEVELS))].sum())


def test_sound_certificates_hold_against_the_exact_smoothed_probability():
    """A base classifier that tells grid points (float32(k)/255) from every other float: class 1 off the grid or
    below 0.45. Float Gaussian noise almost never lands on the grid and would certify class 1 far out; the sound
    noise lands only on it, and every certified interval keeps the exact smoothed probability of f∘R above 1/2
    (α = 0.01, 30 seeded points: a false certificate in any has probability below 0.3 and the seeds are fixed)."""
    def rule(v):
        v = np.asarray(v, np.float32)
        on_grid = np.rint(v.astype(np.float64) * LEVELS).astype(np.float32) / np.float32(LEVELS) == v
        return (v < 0.45) | ~on_grid

    sigma, points = 0.2, 30
    x = np.linspace(0.05, 0.45, points, dtype=np.float32).reshape(points, 1, 1, 1)
    records = certify_points(SessionCounter(Scalar(rule), 2, sigma, 5, 2000, {}, "sound"), x, [1] * points,
                             list(range(points)), sigma=sigma, alpha=0.01, n0=50, n=2000)
    certified = [r for r in records if r["prediction"] == 1]
    assert len(certified) > points // 2
    for r in certified:
        centre = float(x[r["row"]].item())
        for shift in np.linspace(-r["radius"], r["radius"], 41):
            assert exact_probability(rule, centre + shift, sigma) > 0.5, (r, shift)
    assert all(r["prediction"] != ABSTAIN or r["radius"] == 0 for r in records)


def test_smooth_records_sound_noise(digits_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run.path, run)
    from cli_helpers import run_cli

    code, out, err = run_cli("smooth", run, "--sigma", "0.25", "--n0", "10", "--n", "50", "--points", "2", "--noise",
                             "sound", "--predict", "-q")
    assert code == 0, err
    (entry,) = json.loads((run / "smoothing.json").read_text())["results"].values()
    assert entry["settings"]["noise"] == "sound" and "Voráček" in entry["assumptions"]
    assert "sound" in entry["record"]["noise"] and all("p_slack" in p for p in entry["points"])
    for p in entry["points"]:  # PREDICT tests at α less the n samples' total variation
        assert p["predict_level"] == 0.001 - 50 * p["p_slack"] and 0 < p["predict_level"] < 0.001
    document = json.loads((run / "smoothing.json").read_text())
    assert document["results"][entry["key"]]["settings"]["noise"] == "sound"
    from edgerobust.report import render_report
    from edgerobust.run import RunDir

    report = render_report(RunDir.open(run)).read_text()
    assert "host (sound noise)" in report and "Sound in floating point" in report


def test_a_device_counter_has_the_bundle_hashed_once_per_certification():
    """The first runner call checks every file's sha256; the later calls of the same counter pass --no-hash (the
    select and estimate calls of every chunk would otherwise hash the whole bundle again on the device)."""
    from edgerobust.smoothing.counters import DeviceCounter

    class Session:
        calls: list = []

        def call(self, *args):
            self.calls.append(args)
            rows = int(args[args.index("--count") + 1])
            return {"points": [{"counts": [3, 1]} for _ in range(rows)]}

    counter = DeviceCounter(Session(), "set.npz", 2, 0.25, 0, 4, "ort-cpu", "fp32", 1)
    x = np.zeros((2, 1, 2, 2), np.float32)
    counter.counts(x, [0, 1], "select", 4)
    counter.counts(x, [0, 1], "estimate", 4)
    assert ["--no-hash" in c for c in Session.calls] == [False, True]


def test_a_sound_certificate_gives_up_its_slack():
    """certify_counts: p_A's lower bound loses p_slack before Φ⁻¹, the radius loses radius_slack after it, and a
    point whose radius would go below 0 abstains."""
    from edgerobust.smoothing.statistics import certify_counts, lower_confidence_bound

    counts0, counts = [0, 90, 10], [0, 900, 100]
    p = lower_confidence_bound(900, 1000, 0.001)
    cls, plain = certify_counts(counts0, counts, 0.5, 0.001)
    assert (cls, plain) == (1, pytest.approx(0.5 * norm.ppf(p), rel=1e-12))
    cls, slack = certify_counts(counts0, counts, 0.5, 0.001, 0.01, 0.05)
    assert (cls, slack) == (1, pytest.approx(0.5 * norm.ppf(p - 0.01) - 0.05, rel=1e-12))
    assert certify_counts(counts0, counts, 0.5, 0.001, 0.0, plain + 1e-9) == (ABSTAIN, 0.0)
    assert certify_counts(counts0, counts, 0.5, 0.001, p - 0.49, 0.0) == (ABSTAIN, 0.0)


def test_a_sound_predict_gives_up_the_samples_total_variation():
    """predict_counts at level α − n·p_slack: n samples within p_slack each of the certified distribution are within
    n·p_slack together, so PREDICT's error probability stays at most α; a slack that eats α abstains."""
    from scipy.stats import binomtest

    from edgerobust.smoothing.statistics import predict_counts, predict_level

    counts = [0, 0, 20]
    p_value = binomtest(20, 20, 0.5).pvalue  # 2·2⁻²⁰
    assert predict_counts(counts, 0.001) == 2 and predict_counts(counts, 0.001, 1e-15) == 2
    just_enough = (0.001 - p_value) / 20  # level = p_value exactly (up to float rounding, on the right side below)
    assert predict_level(20, 0.001, just_enough * (1 - 1e-9)) >= p_value
    assert predict_counts(counts, 0.001, just_enough * (1 - 1e-9)) == 2
    assert predict_counts(counts, 0.001, just_enough * (1 + 1e-6)) == ABSTAIN
    assert predict_counts(counts, 0.001, 0.001 / 20) == ABSTAIN  # level 0: nothing is predicted


def test_the_exact_analysis_redraws_the_sound_samples():
    """smoothing_agreement with the sound thresholds walks the very samples the sound counter votes on: on a model
    whose votes are far from its boundary (every margin huge), the float64 votes equal the counter's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgerobust.export.tolerance import smoothing_agreement
    from edgerobust.smoothing.counters import SessionCounter

    # logits = (x − 0.5)·[−1000, 1000] for one pixel: class 1 above 0.5, far from the boundary except at 0.5 itself
    w = numpy_helper.from_array(np.array([[-1000.0, 1000.0]], np.float32), "w")
    b = numpy_helper.from_array(np.array([500.0, -500.0], np.float32), "b")
    nodes = [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 1, 1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])], [w, b])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(proto)
    x = np.full((1, 1, 1), 0.4, np.float32)
    thresholds = discrete_gaussian(0.25).thresholds

    class Linear:
        def infer(self, batch):
            return (np.asarray(batch, np.float64).reshape(-1, 1) - 0.5) * np.array([-1000.0, 1000.0])

    counts = SessionCounter(Linear(), 2, 0.25, 7, 50, {}, noise="sound").counts(x[None], [3], "estimate", 200)[0]
    result = smoothing_agreement(proto, x, 3, 0.25, 200, 7, counts, "fp32", "estimate", thresholds)
    assert result["host_counts"] == counts.tolist() and result["passed"] and 0 < counts[1] < 200
