"""Sound randomized smoothing in floating point: Voráček & Hein (ICLR 2023, arXiv 2207.07209), the remedy to the
assumption of exact arithmetic that Song's thesis (ch. 2) and Cohen et al. leave implicit.

Float noise x + ε rounded to float32 is only close to the Gaussian, and a base classifier that reads the last bits
of its input can tell the centre x from its neighbours and so obtain false certificates. The remedy, for inputs on
the 8-bit grid (multiples of 1/255):

- the noise is the Gaussian rounded to the grid, J = round(255·ε), sampled exactly from 60-bit uniform integers
  (the paper's fair coin; here PCG64 keyed by (seed, row, phase)) against integer thresholds
  T_e = round(2⁶⁰·Φ((2e+1)/(510σ))) computed with mpmath at 40 digits;
- the base classifier sees float32(a + J)/255, a = round(255·x): a function of the integer a + J only, so it is
  f∘R with R(z) = float32(round(255 z))/255, and f∘R(x_q + ε) = f(float32(a + J)/255) holds exactly. Cohen's
  theorem then applies to the smoothed f∘R around x_q = a/255, for real inputs, whatever arithmetic f runs in;
- the sampled distribution differs from the rounded Gaussian only by the thresholds' rounding and the far tails
  (beyond 12σ): at most `tv_bound` in total variation per coordinate, d·tv_bound for the image, which is subtracted
  from p_A's lower bound; a point off the grid loses ‖x − x_q‖₂ of its radius (the triangle inequality).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..runner import noise
from ..runner.noise import LEVELS

BITS = noise.SOUND_BITS
RULE = noise.SOUND_RULE

TAIL_SIGMAS = 12  # bins out to 12σ; the mass beyond (2Φ(−12) ≈ 4e-33) counts in the TV bound


@dataclass(frozen=True)
class DiscreteGaussian:
    """The Gaussian N(0, σ²) rounded to multiples of 1/LEVELS, as integer CDF thresholds out of 2^BITS."""
    sigma: float
    half_width: int  # K: noise integers −K..K
    thresholds: np.ndarray  # int64, 2K entries: T at the edges (2e+1)/(2·LEVELS), e = −K..K−1
    tv_bound: float  # total variation to the exact rounded Gaussian, per coordinate

    def probabilities(self) -> np.ndarray:
        """P(J = j) for j = −K..K as the sampler draws it (float64)."""
        edges = np.concatenate([[0], self.thresholds, [2 ** BITS]]).astype(object)  # exact integers
        return np.array([int(w) / 2 ** BITS for w in np.diff(edges)])


@functools.lru_cache(maxsize=16)
def discrete_gaussian(sigma: float) -> DiscreteGaussian:
    import mpmath  # sympy's arbitrary precision (installed with torch): Φ far beyond float64's 1e-16

    half = math.ceil(TAIL_SIGMAS * sigma * LEVELS)
    scale = 2 ** BITS
    with mpmath.workdps(40):
        s = mpmath.mpf(sigma)  # σ as the float the certificate states, exactly
        cdf = [mpmath.ncdf(mpmath.mpf(2 * e + 1) / (2 * LEVELS), 0, s) for e in range(-half, half)]
        thresholds = np.array([int(mpmath.nint(c * scale)) for c in cdf], dtype=np.int64)
        tail = 2 * mpmath.ncdf(-mpmath.mpf(2 * half + 1) / (2 * LEVELS), 0, s)
        # Σ over edges of |T/2^60 − Φ| (≤ half a unit each, plus mpmath's 1e-40) and the mass beyond the end bins
        bound = len(cdf) * (mpmath.mpf(1) / (2 * scale) + mpmath.mpf(10) ** -38) + tail
    return DiscreteGaussian(float(sigma), half, thresholds, float(bound) * (1 + 1e-9))  # rounded up


def grid_point(x: np.ndarray) -> np.ndarray:
    """a = round(255·x) as int64: the grid point the certificate is about."""
    return np.rint(np.asarray(x, np.float64) * LEVELS).astype(np.int64)


def grid_distance(x: np.ndarray) -> float:
    """‖x − a/255‖₂ in float64, rounded up by a margin above float64's error: what an off-grid point's radius loses."""
    x = np.asarray(x, np.float64)
    return float(np.linalg.norm(x - grid_point(x) / LEVELS)) + math.sqrt(x.size) * 1e-14


def sound_batches(x: np.ndarray, sigma: float, n: int, batch: int, seed: int, row: int, phase: int = 1,
                  buffers: noise.Ring | None = None, first: int | None = None):
    """The `n` noisy copies of point `x` under the sound noise, `batch` at a time: float32(a + J)/255 (the runner's
    `sound_batches`, which a device runs with the same thresholds)."""
    return noise.sound_batches(x, discrete_gaussian(float(sigma)).thresholds, n, batch, seed, row, phase, buffers,
                               first)


def sample_bins(seed: int, row: int, phase: int, sigma: float, shape: tuple[int, ...]) -> np.ndarray:
    """Bin indices 0..2K (noise integer + K) of the sound noise at σ, the stream (seed, row, phase)'s first."""
    return noise.sound_bins(noise.SoundDraws(seed, row, phase), discrete_gaussian(float(sigma)).thresholds, shape)


def slack(x: np.ndarray, sigma: float) -> tuple[float, float]:
    """(probability, radius) a sound certificate of point `x` gives up: d·TV bound from p_A, grid distance."""
    return x.size * discrete_gaussian(float(sigma)).tv_bound, grid_distance(x)
