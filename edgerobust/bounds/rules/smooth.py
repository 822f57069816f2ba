"""Smooth activations: Exp, Sigmoid, Tanh, Erf, Softplus, Elu, Gelu (what ELU, Swish, GELU, Softplus and KAF
networks lower to; Peconi's KAF, issue 25).

IBP: each is nondecreasing, so (lo, hi) maps to (f(lo), f(hi)); Gelu (opset 20's one operator for GELU) has one
minimum, at x* ≈ -0.752, added where [lo, hi] holds it. CROWN (Zhang et al. 2018, §3.2): for the convex ones
(Exp, Softplus, Elu with 0 <= α <= 1) the upper bound is the chord on [l, u], the lower the tangent at the midpoint
m; for the S-shaped ones and Gelu the tangent at m shifted by ±K·r²/2 (Taylor, K >= max|f″|, r = (u - l)/2) where
that band is narrower than max f - min f on [l, u], else those constants (Elu with α > 1 keeps the constants).

Error term (Higham ch. 3 extended to a library function): with x̂ within e of x and in [lo, hi],
|f̂(x̂) - f(x)| <= L·e + c·u·(|f(x̂)| + 1) + store·|f̂| + η_min, L = max |f′| on [lo, hi] (mean value theorem; signed
ranges keep exp(x <= 0) below 1). The library term is an assumption, not a theorem: onnxruntime's Exp, Sigmoid,
Tanh, Erf, Softplus, Elu and Gelu kernels (MLAS polynomial approximations) are not correctly rounded; measured against
float64 on 3·10⁶ points in [-30, 30], |f̂ - f| / (u·(|f| + 1)) stays below 2.8 in fp32 and 1 in fp16, and
c = FUNCTION_ULPS = 16 is taken.
"""
from __future__ import annotations

import math

import torch

from .base import SLACK, Rule, register

FUNCTION_ULPS = 16.0  # library accuracy assumed for exp, sigmoid, tanh, erf, softplus and elu (module docstring)


class _Monotone(Rule):
    """A nondecreasing elementwise function of one computed input (`range` overridden where it is not)."""

    nonlinear = True
    curvature: float | None = None  # K >= max |f″| (S-shaped rules); None: no Taylor band

    def convex(self, node) -> bool:
        return False

    def forward(self, node, x):
        raise NotImplementedError

    def slope(self, node, x):
        """f′(x)."""
        raise NotImplementedError

    def lipschitz(self, node, lo, hi):
        """max f′ on [lo, hi]."""
        raise NotImplementedError

    def range(self, node, lo, hi):
        """(min f, max f) on [lo, hi]: the ends, for a nondecreasing f."""
        return self.forward(node, lo), self.forward(node, hi)

    def interval(self, node, bounds):
        lo, hi = self.range(node, *bounds)
        return lo - SLACK * lo.abs(), hi + SLACK * hi.abs()

    def _relaxation(self, node, l, u):  # noqa: E741  (the papers' names)
        """(lower slope, lower intercept, upper slope, upper intercept), sound on [l, u]."""
        fl, fu = self.range(node, l, u)
        zero = torch.zeros_like(l)
        finite = torch.isfinite(l) & torch.isfinite(u) & torch.isfinite(fl) & torch.isfinite(fu)
        safe_l, safe_u = torch.where(finite, l, zero), torch.where(finite, u, zero)
        m, r = (safe_l + safe_u) / 2, (safe_u - safe_l) / 2
        fm, sm = self.forward(node, m), self.slope(node, m)
        wide = finite & (r > 1e-9)  # narrower: the constants f(l), f(u) are as tight
        ls, lb, us, ub = zero, fl, zero, fu
        if self.convex(node):
            chord = (self.forward(node, safe_u) - self.forward(node, safe_l)) / torch.where(wide, 2 * r, 1 + zero)
            ok = wide & torch.isfinite(chord) & torch.isfinite(sm)
            ls, lb = torch.where(ok, sm, ls), torch.where(ok, fm - sm * m, lb)
            us, ub = torch.where(ok, chord, us), torch.where(ok, self.forward(node, safe_l) - chord * safe_l, ub)
        elif self.curvature is not None:
            band = self.curvature * r * r / 2
            ok = wide & (2 * band < fu - fl)
            ls, lb = torch.where(ok, sm, ls), torch.where(ok, fm - sm * m - band, lb)
            us, ub = torch.where(ok, sm, us), torch.where(ok, fm - sm * m + band, ub)
        # the float64 evaluation of f(m), f′(m) and the intercepts: widen by SLACK of what they summed
        size = fm.abs() + sm.abs() * (m.abs() + r) + torch.where(finite, fl.abs() + fu.abs(), zero)
        return ls, lb - SLACK * size, us, ub + SLACK * size

    def backward(self, node, A, bounds, alpha=None):
        ls, lb, us, ub = self._relaxation(node, *bounds)
        pos, neg = A.clamp_min(0), A.clamp_max(0)
        a_in = pos * ls + neg * us
        # 0·inf would be nan: an infinite intercept counts only where A uses it
        const = torch.where(pos > 0, pos * lb, 0.0) + torch.where(neg < 0, neg * ub, 0.0)
        S, B = A.shape[:2]
        return [a_in], const.reshape(S, B, -1).sum(-1), const.abs().reshape(S, B, -1).sum(-1)

    def error(self, node, ar, mags, errs):
        return self.error_in(node, ar, [(-mags[0], mags[0])], mags, errs)

    def error_in(self, node, ar, ranges, mags, errs):
        lo, hi = ranges[0]
        value = torch.maximum(*(t.abs() for t in self.range(node, lo, hi)))  # >= |f(x̂)|
        library = FUNCTION_ULPS * ar.unit_roundoff * (value + 1)
        return (self.lipschitz(node, lo, hi) * errs[0] + library + ar.store * (value + library)
                + ar.underflow)


def _peak_at_zero(lo, hi):
    """The point of [lo, hi] nearest 0 (where a bell-shaped f′ is largest)."""
    return torch.minimum(torch.maximum(torch.zeros_like(lo), lo), hi)


@register("Exp")
class Exp(_Monotone):
    """exp(x)."""

    def convex(self, node):
        return True

    def forward(self, node, x):
        return torch.exp(x)

    def slope(self, node, x):
        return torch.exp(x)

    def lipschitz(self, node, lo, hi):
        return torch.exp(hi)


@register("Sigmoid")
class Sigmoid(_Monotone):
    """1 / (1 + exp(-x))."""

    curvature = math.sqrt(3) / 18  # max |σ″|, at x = ±log(2 + √3)

    def forward(self, node, x):
        return torch.sigmoid(x)

    def slope(self, node, x):
        s = torch.sigmoid(x)
        return s * (1 - s)

    def lipschitz(self, node, lo, hi):
        return self.slope(node, _peak_at_zero(lo, hi))


@register("Tanh")
class Tanh(_Monotone):
    """tanh(x)."""

    curvature = 4 / (3 * math.sqrt(3))  # max |tanh″|, at x = ±artanh(1/√3)

    def forward(self, node, x):
        return torch.tanh(x)

    def slope(self, node, x):
        return 1 - torch.tanh(x) ** 2

    def lipschitz(self, node, lo, hi):
        return self.slope(node, _peak_at_zero(lo, hi))


@register("Erf")
class Erf(_Monotone):
    """erf(x) (GELU's exact form: x·(1 + erf(x/√2))/2)."""

    curvature = 2 * math.sqrt(2) / math.sqrt(math.pi * math.e)  # max |erf″| = (4/√π)·x·e^{-x²} at x = 1/√2

    def forward(self, node, x):
        return torch.erf(x)

    def slope(self, node, x):
        return 2 / math.sqrt(math.pi) * torch.exp(-x * x)

    def lipschitz(self, node, lo, hi):
        return self.slope(node, _peak_at_zero(lo, hi))


@register("Softplus")
class Softplus(_Monotone):
    """log(1 + exp(x)) (ONNX's definition, without PyTorch's linear branch above x = 20)."""

    def convex(self, node):
        return True

    def forward(self, node, x):
        return torch.logaddexp(x, torch.zeros_like(x))

    def slope(self, node, x):
        return torch.sigmoid(x)

    def lipschitz(self, node, lo, hi):
        return torch.sigmoid(hi)


@register("Elu")
class Elu(_Monotone):
    """x for x > 0, α(exp(x) - 1) otherwise (convex for 0 <= α <= 1; monotone needs α >= 0)."""

    def alpha(self, node) -> float:
        alpha = float(node.attr("alpha", 1.0))
        if alpha < 0:
            raise node.refuse(f"alpha {alpha} < 0 makes ELU non-monotone")
        return alpha

    def convex(self, node):
        return self.alpha(node) <= 1

    def forward(self, node, x):
        return torch.where(x > 0, x, self.alpha(node) * torch.expm1(torch.clamp(x, max=0)))

    def slope(self, node, x):
        return torch.where(x > 0, torch.ones_like(x), self.alpha(node) * torch.exp(torch.clamp(x, max=0)))

    def lipschitz(self, node, lo, hi):
        one = (hi > 0).to(lo.dtype)
        negative = (lo < 0).to(lo.dtype) * self.alpha(node) * torch.exp(torch.clamp(hi, max=0))
        return torch.maximum(one, negative)


GELU_MIN_AT = -0.7517915241  # GELU′(x) = Φ(x) + x·φ(x) = 0 there (its one minimum, ≈ -0.16997)
GELU_SLOPE = 1.1289978  # max |GELU′| = Φ(√2) + √2·φ(√2)


@register("Gelu")
class Gelu(_Monotone):
    """x·Φ(x) (opset 20; approximate = "none"). Decreasing below its minimum at x* ≈ -0.752, increasing above."""

    curvature = 2 / math.sqrt(2 * math.pi)  # max |GELU″| = max φ(x)(2 - x²) = 2φ(0)

    def forward(self, node, x):
        if node.attr("approximate", "none") != "none":
            raise node.refuse("the tanh approximation has no rule; export GELU in its exact (erf) form")
        return x * torch.special.erfc(-x / math.sqrt(2)) / 2  # Φ(x) by erfc: no cancellation for x << 0

    def slope(self, node, x):
        return torch.special.erfc(-x / math.sqrt(2)) / 2 + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)

    def range(self, node, lo, hi):
        flo, fhi = self.forward(node, lo), self.forward(node, hi)
        inside = (lo <= GELU_MIN_AT) & (hi >= GELU_MIN_AT)
        low = torch.where(inside, self.forward(node, torch.full_like(lo, GELU_MIN_AT)), torch.minimum(flo, fhi))
        return low - 1e-9 * inside.to(lo.dtype), torch.maximum(flo, fhi)  # x* to 10 digits: f(x*) within 1e-9

    def lipschitz(self, node, lo, hi):
        return torch.full_like(lo, GELU_SLOPE)
