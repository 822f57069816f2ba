"""Piecewise-linear activations: Relu and Clip (ReLU6, hard bounds).

IBP: both are monotone, so the bounds map through. CROWN: on [l, u] across one kink the upper (or, for the concave
kink of Clip's maximum, the lower) bound is the chord; the other bound is a line through the kink with slope
α ∈ [0, 1], chosen adaptively (α = 1 where u > -l, CROWN's choice; Zhang et al. 2018) or optimised (α-CROWN,
Xu et al. 2021): below max(x, low) for any α in [0, 1] since α·(x - low) <= max(x - low, 0) there, above
min(x, high) since high + α·(x - high) >= min(x, high) (a convex or concave kink alone: one α per element).
Across both kinks of a Clip the bounds are the constants clip(l), clip(u). Error term: both are 1-Lipschitz and
computed exactly, so e' = e.
"""
from __future__ import annotations

import math

import torch

from .base import Rule, register, relaxed_backward


def _relu_relaxation(l, u, alpha=None):  # noqa: E741  (the papers' name)
    """`_relaxation` at (low, high) = (0, inf) in a third of the operations: the hot path of CROWN on ReLU nets."""
    active, cross = (l >= 0).to(l.dtype), ((l < 0) & (u > 0)).to(l.dtype)
    chord = cross * u / torch.where(cross > 0, u - l, torch.ones_like(l))
    a = (u > -l).to(l.dtype) if alpha is None else alpha
    return active + cross * a, torch.zeros_like(l), active + chord, -chord * l


def _relaxation(lo, u, low, high, alpha=None):
    """(lower slope, lower intercept, upper slope, upper intercept) of clip(·, low, high) on [l, u]."""
    if low == 0.0 and high == math.inf:
        return _relu_relaxation(lo, u, alpha)
    return _clip_relaxation(lo, u, low, high, alpha)


def _clip_relaxation(lo, u, low, high, alpha=None):
    l = lo  # noqa: E741  (the papers' name)
    one, zero = torch.ones_like(l), torch.zeros_like(l)
    below, above = u <= low, l >= high
    inside = (l >= low) & (u <= high)
    convex = (l < low) & (u > low) & (u <= high)  # one kink at `low`: a shifted ReLU
    concave = (l >= low) & (l < high) & (u > high)  # one kink at `high`
    width = torch.where(convex | concave, u - l, one)
    # convex: upper chord through (l, low), (u, u); lower: slope α through (low, low)
    chord_up = (u - low) / width
    adaptive = (u - low > low - l).to(l.dtype)
    a = adaptive if alpha is None else alpha
    # concave: lower chord through (l, l), (u, high); upper: slope b in [0, 1] through (high, high), 1 (y <= x) or 0
    # (y <= high) adaptively, α where optimised (the two kinds of element are disjoint: one α per element serves both)
    chord_low = (high - l) / width if math.isfinite(high) else zero
    up_adaptive = (high - l > u - high).to(l.dtype) if math.isfinite(high) else zero
    if alpha is not None and math.isfinite(high):
        up_adaptive = alpha
    clip_l = l.clamp(low, high)
    clip_u = u.clamp(low, high)
    ls = torch.where(inside, one, torch.where(convex, a, torch.where(concave, chord_low, zero)))
    lb = torch.where(inside, zero, torch.where(convex, low * (1 - a),
                     torch.where(concave, l - chord_low * l, clip_l)))
    us = torch.where(inside, one, torch.where(convex, chord_up, torch.where(concave, up_adaptive, zero)))
    ub = torch.where(inside, zero, torch.where(convex, low - chord_up * l,
                     torch.where(concave, (1 - up_adaptive) * (high if math.isfinite(high) else 0.0), clip_u)))
    ls = torch.where(below | above, zero, ls)
    us = torch.where(below | above, zero, us)
    lb = torch.where(below, torch.full_like(l, low), torch.where(above, clip_l, lb))
    ub = torch.where(below, torch.full_like(l, low), torch.where(above, clip_u, ub))
    return ls, lb, us, ub


def unstable(lo, u, low=0.0, high=math.inf):
    """Where the relaxation has a free lower slope (α-CROWN's variables; the free upper slopes at `high` are
    `concave`'s)."""
    return (lo < low) & (u > low) & (u <= high)


def concave(lo, u, low, high):
    """Where the relaxation has a free upper slope: across the kink at `high` only."""
    return (lo >= low) & (lo < high) & (u > high)


class _Clip(Rule):
    nonlinear = True

    def limits(self, node) -> tuple[float, float]:
        raise NotImplementedError

    def forward(self, node, x):
        low, high = self.limits(node)
        return x.clamp(low, None if math.isinf(high) else high)

    def interval(self, node, bounds):
        return self.forward(node, bounds[0]), self.forward(node, bounds[1])

    def needs(self, node, lo, hi):
        """Only elements across a kink: elsewhere the relaxation is exact whatever tighter bounds say."""
        low, high = self.limits(node)
        return ((lo < low) & (hi > low)) | ((lo < high) & (hi > high))

    def alpha_start(self, node, lo, hi):
        """α-CROWN's slopes in [0, 1] at CROWN's choice: the lower one through the kink at `low` where only that kink
        is crossed, the upper one through the kink at `high` where only that one is (disjoint, so one per element)."""
        low, high = self.limits(node)
        lower = (hi - low > low - lo) & unstable(lo, hi, low, high)
        upper = (high - lo > hi - high) & concave(lo, hi, low, high)
        return (lower | upper).to(lo.dtype)

    def backward(self, node, A, bounds, alpha=None):
        low, high = self.limits(node)
        alpha = None if alpha is None else alpha.nan_to_num(0.0).clamp(0, 1)  # sound for any α: slopes in [0, 1]
        ls, lb, us, ub = _relaxation(bounds[0], bounds[1], low, high, alpha)
        return relaxed_backward(A, ls, lb, us, ub)

    def error(self, node, ar, mags, errs):
        return errs[0]


@register("Relu")
class Relu(_Clip):
    """max(x, 0)."""

    def limits(self, node):
        return 0.0, math.inf


@register("Clip")
class Clip(_Clip):
    """min(max(x, low), high) with constant limits (ReLU6)."""

    def limits(self, node):
        low, high = node.const(1), node.const(2)
        low = node.attr("min", -math.inf) if low is None else float(low)
        high = node.attr("max", math.inf) if high is None else float(high)
        if math.isinf(low):
            raise node.refuse("Clip without a lower limit has no CROWN rule here")
        return float(low), float(high)
