"""Points drawn inside an L∞ or L2 ball ∩ [0, 1]: the one definition the device runner and the host both draw from.

`edgerobust certify RUN --host` checks the device's own outputs at such points against the certificates' bounds
(remote/certify_check.py). Every stream is keyed by (seed, point row, phase 3), as the smoothing noise is (noise.py):

    rng = numpy.random.Generator(numpy.random.PCG64(numpy.random.SeedSequence([seed, row, 3])))
    L∞: u = rng.random((b,) + x.shape) (float64); odd samples take round(u) (a vertex of the ball);
        z = clip(x + eps * (2u - 1), max(0, x - eps), min(1, x + eps))
    L2: g = rng.standard_normal((b, d + 2)) (float64, d = x.size); odd samples zero g's last two entries (a point on
        the sphere); z = clip(x + eps * g[:d] / |g|, 0, 1): uniform in the ball (the first d coordinates of a uniform
        point on the sphere in d + 2 dimensions); the box projection only moves z closer to x
    then float32, each coordinate rounded back towards x where rounding left the ball (L∞: one ulp; L2: every
    coordinate rounded towards x, the step shrunk by 1 - 2^-10 while the float64 norm still exceeds eps), so every
    point is inside the ball exactly.
"""
import hashlib

import numpy as np

from .noise import generator

PHASE = 3
NORMS = ("inf", "2")
RULE = ("numpy.random.Generator(PCG64(SeedSequence([seed, row, 3]))); L-inf: x + eps*(2*random - 1), odd samples "
        "at vertices; L2: x + eps*g[:d]/|g| with g normal in d+2 dimensions, odd samples on the sphere; clipped to "
        "[0,1], float32 inside the ball")


def ball_batches(x, eps, norm, n, batch, seed, row):
    """The `n` points of one centre `x` (C,H,W float32), in stream order, `batch` at a time (float32)."""
    rng = generator(seed, row, PHASE)
    centre = np.asarray(x, dtype=np.float32)
    base = centre.astype(np.float64)
    done = 0
    while done < n:
        size = min(batch, n - done)
        odd = (np.arange(done, done + size) % 2 == 1)
        if norm == "inf":
            u = rng.random((size,) + base.shape)
            u[odd] = np.round(u[odd])
            z = np.clip(base + eps * (2 * u - 1), np.maximum(0.0, base - eps), np.minimum(1.0, base + eps))
            out = _inside_inf(z.astype(np.float32), base, eps)
        else:
            d = base.size  # uniform in the d-ball: d coordinates of a uniform point on the (d+1)-sphere in R^(d+2)
            g = rng.standard_normal((size, d + 2))  # (Voelker et al. 2017); one draw per sample keeps batches equal
            g[odd, d:] = 0.0
            step = eps * g[:, :d] / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-300)
            z = np.clip(base.reshape(1, -1) + step, 0.0, 1.0).reshape((size,) + base.shape)
            out = _inside_l2(z, centre, base, eps)
        yield out
        done += size


def _inside_inf(z, base, eps):
    """Coordinates that rounding to float32 put outside [x - eps, x + eps] ∩ [0, 1] move one ulp back towards x."""
    wide = z.astype(np.float64)  # float32 minus float32 is exact in float64: the same test as the host's
    over, under = (wide - base > eps) | (wide > 1.0), (base - wide > eps) | (wide < 0.0)
    z[over] = np.nextafter(z[over], np.float32(-np.inf))
    z[under] = np.nextafter(z[under], np.float32(np.inf))
    return z


def _toward(z, centre, base):
    """z (float64) to float32, each coordinate rounded towards the centre: |z32 - x| <= |z - x| coordinate-wise."""
    out = z.astype(np.float32)
    away = np.abs(out.astype(np.float64) - base) > np.abs(z - base)
    out[away] = np.nextafter(out[away], np.broadcast_to(centre, out.shape)[away])
    return out


def _inside_l2(z, centre, base, eps):
    """Rounded towards x, a point moves no further from x; a float64 rounding of the step itself (at a tiny eps) is
    undone by shrinking the step by 2^-10 per round; a point still outside after 64 rounds becomes x itself."""
    out = _toward(z, centre, base)
    for _ in range(64):
        far = np.linalg.norm((out.astype(np.float64) - base).reshape(len(out), -1), axis=1) > eps
        if not far.any():
            return out
        z[far] = base + (z[far] - base) * (1 - 2.0 ** -10)
        out[far] = _toward(z[far], centre, base)
    out[far] = centre
    return out


def fingerprint(x, eps, norm, seed, row, count=4):
    """sha256 (16 hex digits) of the first `count` points of a stream: equal on two machines exactly when they
    drew the same points."""
    first = next(ball_batches(x, eps, norm, count, count, seed, row))
    return hashlib.sha256(np.ascontiguousarray(first, dtype="<f4").tobytes()).hexdigest()[:16]
