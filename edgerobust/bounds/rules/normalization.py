"""Local response normalisation (LRN; Krizhevsky et al. 2012; Peck's thesis, seed 003, §5.2.4).

ONNX's definition: y_c = x_c·D_c^(-β), D_c = bias + (α/size)·S_c, S_c = Σ x_l² over the channels
l ∈ [c - ⌊(size-1)/2⌋, c + ⌈(size-1)/2⌉] at the same position. Refused unless bias > 0, α >= 0 and β > 0 (D stays
positive and |y| <= |x|·bias^(-β)). Imported ONNX graphs (AlexNet- and GoogLeNet-style models converted from other
frameworks) hold it; PyTorch's exporter lowers LocalResponseNorm to primitive operators instead.

IBP: with a = α/size and S'_c the sum over the window without c (its bounds from the neighbours' |x|), y_c = g(x_c, b)
with g(t, b) = t·(b + a·t²)^(-β) and b = bias + a·S'_c. g is odd in t, decreasing in b for t > 0, and for t >= 0
rises to its peak at t* = √(b / (a(2β - 1))) (β > 1/2; else it rises for ever), so on [l, u] with u > 0 the largest
y is g(clamp(t*, max(l, 0), u), b_lo), and with u <= 0 it is -min(g(-u, b_hi), g(-l, b_hi)) (unimodal: the least
|y| is at an end); the smallest y is the mirror image. Exact at ε = 0 up to the engine's SLACK widening.
CROWN: the interval as constant bounds (zero slopes): sound, exact at ε = 0; no α-CROWN variables.
Error term (Higham ch. 3): the input errors pass through at most the Jacobian's row sum (the mean value theorem),
bias^(-β)·(max(1, 2β) + β·(size - 1)) (each off-diagonal |∂y_c/∂x_l| = 2aβ|x_c x_l|·D_c^(-β-1) <= β·D_c^(-β) as
2a|x_c x_l| <= a(x_c² + x_l²) < D_c; the diagonal within max(1, 2β - 1)·D_c^(-β)), times the window's largest e;
the kernel itself is within rel·|y|: D's positive terms round at most size + 3 times (γ_(size+4)), D^(±β) is a
library pow within FUNCTION_ULPS ulps (smooth.py's assumption), one product or quotient, one store. The same row
and column sums give the L2 operator norm bound `lipschitz_bound` (certify/lipschitz.py).
"""
from __future__ import annotations

import math

import torch

from .base import SLACK, Rule, Unbounded, register, relaxed_backward
from .smooth import FUNCTION_ULPS


def _window_offsets(size: int) -> range:
    before = (size - 1) // 2
    return range(-before, size - before)


def _shifted(t: torch.Tensor, offset: int) -> torch.Tensor:
    """t[:, c + offset] at channel c, zero outside the channels."""
    out = torch.zeros_like(t)
    C = t.shape[1]
    if offset >= 0:
        out[:, :C - offset] = t[:, offset:]
    else:
        out[:, -offset:] = t[:, :C + offset]
    return out


def channel_window(t: torch.Tensor, size: int, reduce: str = "sum", centre: bool = True) -> torch.Tensor:
    """Σ (or max) of t over each channel's LRN window, with or without the channel itself."""
    out = None
    for offset in _window_offsets(size):
        if offset == 0 and not centre:
            continue
        s = t if offset == 0 else _shifted(t, offset)
        out = s if out is None else (out + s if reduce == "sum" else torch.maximum(out, s))
    return torch.zeros_like(t) if out is None else out


@register("LRN")
class LRN(Rule):
    """Local response normalisation across channels."""

    nonlinear = True

    def params(self, node) -> tuple[float, float, float, int]:
        """(a = α/size, β, bias, size), refused outside bias > 0, α >= 0, β > 0."""
        size = int(node.attr("size"))
        alpha, beta, bias = (float(node.attr(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
        if size < 1 or bias <= 0 or alpha < 0 or beta <= 0:
            raise node.refuse(f"size {size}, bias {bias:g}, alpha {alpha:g}, beta {beta:g} (bounded only for "
                              "size >= 1, bias > 0, alpha >= 0, beta > 0)")
        return alpha / size, beta, bias, size

    def forward(self, node, x):
        a, beta, bias, size = self.params(node)
        return x * (bias + a * channel_window(x * x, size)) ** -beta

    @staticmethod
    def _g(t, b, a, beta):
        return t * (b + a * t * t) ** -beta

    def _upper(self, lo, hi, b_lo, b_hi, a, beta):
        peak = torch.sqrt(b_lo / (a * (2 * beta - 1))) if a > 0 and beta > 0.5 else torch.full_like(lo, math.inf)
        positive = self._g(torch.minimum(torch.maximum(peak, lo.clamp_min(0)), hi), b_lo, a, beta)
        negative = -torch.minimum(self._g(-hi, b_hi, a, beta), self._g(-lo, b_hi, a, beta))
        return torch.where(hi > 0, positive, negative)

    def interval(self, node, bounds):
        a, beta, bias, size = self.params(node)
        lo, hi = bounds
        sq_lo = torch.where(lo >= 0, lo, torch.where(hi <= 0, -hi, torch.zeros_like(lo))) ** 2
        sq_hi = torch.maximum(lo.abs(), hi.abs()) ** 2
        b_lo = bias + a * channel_window(sq_lo, size, centre=False)
        b_hi = bias + a * channel_window(sq_hi, size, centre=False)
        up = self._upper(lo, hi, b_lo, b_hi, a, beta)
        low = -self._upper(-hi, -lo, b_lo, b_hi, a, beta)
        return ((low - SLACK * low.abs()).nan_to_num(nan=-torch.inf),
                (up + SLACK * up.abs()).nan_to_num(nan=torch.inf))

    def backward(self, node, A, bounds, alpha=None):
        low, up = self.interval(node, bounds)
        zero = torch.zeros_like(low)
        return relaxed_backward(A, zero, low, zero, up)

    def lipschitz_bound(self, node) -> float:
        """A bound of every row and column sum of |∂y/∂x| (module docstring): the L2 operator norm's too."""
        _, beta, bias, size = self.params(node)
        return bias ** -beta * (max(1.0, 2 * beta) + beta * (size - 1))

    def error(self, node, ar, mags, errs):
        a, beta, bias, size = self.params(node)
        if float(mags[0].max()) ** 2 * size > ar.largest:
            raise Unbounded(f"{node.label()}: the sum of squares may overflow")
        library = FUNCTION_ULPS * ar.unit_roundoff
        gamma = ar.gamma(size + 4) + a * size * ar.underflow / bias  # D's relative error (squares may underflow)
        if gamma >= 1 or library >= 1:
            raise Unbounded(f"{node.label()}: no finite rounding bound in this arithmetic")
        rel = (1 - gamma) ** -beta / (1 - library) * (1 + ar.unit_roundoff) * (1 + ar.store) - 1
        through = self.lipschitz_bound(node) * channel_window(errs[0], size, reduce="max")
        return through + rel * mags[0] * bias ** -beta + ar.underflow
