"""Elementwise arithmetic: Add/Sub of two computed tensors (residuals), Add/Sub/Mul/Div by a constant (the input
normalisation (x - mean) / std among them), and Mul of two computed tensors (Swish x·σ(x), GELU, KAF's squares).

Error terms (one rounding of the result; a constant stored rounded by u_w):
x ± c: e + u_w|c| + single·(a + |c|(1 + u_w)); x·c: |c|e + u_w|c|a + single·|c|(1 + u_w)a + η_min;
x / c: (e + u_w a)/|ĉ|_min + single·a/|ĉ|_min + η_min with |ĉ| >= |c|(1 - u_w); x1 ± x2: e1 + e2 + single·(a1 + a2);
x1·x2: e1·a2 + a1·e2 + single·a1·a2 + η_min (x̂1x̂2 - x1x2 = (x̂1 - x1)x̂2 + x1(x̂2 - x2)).
The product's CROWN relaxation is McCormick's: x·y >= l_y·x + l_x·y - l_x·l_y, x·y <= u_y·x + l_x·y - l_x·u_y;
a square x·x (one tensor twice: KAF's (x - d)²) is convex and non-negative: tangent at the midpoint below, chord above.
"""
from __future__ import annotations

import torch

from .base import SLACK, Linear, register


@register("Add", "Sub", "Div")
class Elementwise(Linear):
    """x op c, c op x (Add, Sub, Mul; Div only as x / c) or x1 ± x2."""

    def _shape(self, node):
        first, second = node.const(0), node.const(1)
        if first is not None and second is not None:
            raise node.refuse("both operands are constants (the graph should be constant-folded)")
        if first is None and second is None:
            if node.op not in ("Add", "Sub"):
                raise node.refuse(f"{node.op} of two computed tensors is not linear")
            return None, False
        if first is not None and node.op == "Div":
            raise node.refuse("a constant divided by a computed tensor is not linear")
        return (second if first is None else first), first is not None

    def mixes(self, node):
        return self._shape(node)[0] is None  # x1 ± x2 sums two elements; with a constant it is elementwise

    def forward(self, node, *xs):
        c, const_first = self._shape(node)
        if c is None:
            return xs[0] + xs[1] if node.op == "Add" else xs[0] - xs[1]
        x, c = xs[0], c.to(xs[0].dtype)
        if node.op == "Add":
            return x + c
        if node.op == "Sub":
            return c - x if const_first else x - c
        return x * c if node.op == "Mul" else x / c

    def abs_linear(self, node, *ts):
        c, _ = self._shape(node)
        if c is None:
            return ts[0] + ts[1]
        c = c.to(ts[0].dtype)
        if node.op in ("Add", "Sub"):
            return ts[0] + 0 * c  # broadcast like the operator
        return ts[0] * c.abs() if node.op == "Mul" else ts[0] / c.abs()

    def diagonal(self, node, shape):
        c, const_first = self._shape(node)
        if c is None:
            return None
        if node.op in ("Add", "Sub"):
            return torch.full((), -1.0 if node.op == "Sub" and const_first else 1.0, dtype=c.dtype, device=c.device)
        return c if node.op == "Mul" else 1 / c  # x / c as x·(1/c): one more rounding, counted by the fast pass

    def adjoint_terms(self, node):
        return None if self._shape(node)[0] is None else 1

    def error(self, node, ar, mags, errs):
        c, _ = self._shape(node)
        one = ar.single
        if c is None:
            return errs[0] + errs[1] + one * (mags[0] + mags[1])
        e, a, cabs, uw = errs[0], mags[0], c.abs().to(errs[0].dtype), ar.weight_roundoff
        if node.op in ("Add", "Sub"):
            return e + uw * cabs + one * (a + cabs * (1 + uw))
        if node.op == "Mul":
            return cabs * e + uw * cabs * a + one * cabs * (1 + uw) * a + ar.underflow
        low = cabs * (1 - uw)
        return (e + a * uw) / low + one * a / low + ar.underflow


def _product_operands(node, bounds):
    (lx, ux), (ly, uy) = bounds
    if lx.shape != ly.shape:
        raise node.refuse(f"a product of computed tensors of shapes {tuple(lx.shape)} and {tuple(ly.shape)} "
                          "(broadcast) has no rule")
    return lx, ux, ly, uy


@register("Mul")
class Mul(Elementwise):
    """x·c or c·x (linear), or x1·x2 of two computed tensors of one shape (McCormick)."""

    def _product(self, node) -> bool:
        return node.const(0) is None and node.const(1) is None

    def _square(self, node) -> bool:
        return self._product(node) and node.inputs[0] == node.inputs[1]

    def nonlinear_at(self, node):
        return self._product(node)

    def _shape(self, node):
        return (None, False) if self._product(node) else super()._shape(node)

    def forward(self, node, *xs):
        return xs[0] * xs[1] if self._product(node) else super().forward(node, *xs)

    def interval(self, node, *bounds):
        if not self._product(node):
            return super().interval(node, *bounds)
        lx, ux, ly, uy = _product_operands(node, bounds)
        corners = torch.stack([lx * ly, lx * uy, ux * ly, ux * uy])
        unknown = torch.isnan(corners).any(0)  # 0·inf
        lo, hi = corners.min(0).values, corners.max(0).values
        if self._square(node):  # x·x >= 0, and 0 inside when l <= 0 <= u
            lo = torch.where((lx <= 0) & (ux >= 0), torch.zeros_like(lo), torch.minimum(lx * lx, ux * ux))
        size = corners.abs().max(0).values
        lo, hi = lo - SLACK * size, hi + SLACK * size
        if self._square(node):
            lo = lo.clamp_min(0)  # exact: x·x >= 0 whatever the rounding
        return torch.where(unknown, -torch.inf, lo), torch.where(unknown, torch.inf, hi)

    def backward(self, node, A, *bounds, alpha=None):
        if not self._product(node):
            return super().backward(node, A, *bounds, alpha=alpha)
        lx, ux, ly, uy = _product_operands(node, bounds)
        finite = torch.isfinite(lx) & torch.isfinite(ux) & torch.isfinite(ly) & torch.isfinite(uy)
        zero = torch.zeros_like(lx)
        lx, ux, ly, uy = (torch.where(finite, t, zero) for t in (lx, ux, ly, uy))
        pos, neg = A.clamp_min(0), A.clamp_max(0)
        if self._square(node):  # convex: tangent at the midpoint m below, the chord above
            m = (lx + ux) / 2
            a_x, a_y = pos * 2 * m + neg * (lx + ux), torch.zeros_like(A)
            const = pos * (-m * m) + neg * (-lx * ux)
        else:
            a_x = pos * ly + neg * uy
            a_y = (pos + neg) * lx
            const = pos * (-lx * ly) + neg * (-lx * uy)
        size = (pos - neg) * (lx.abs() + ux.abs()) * (ly.abs() + uy.abs())
        # an element with an infinite input bound: no finite linear bound (the constant -inf where A uses it)
        const = torch.where(finite | (A == 0), const - SLACK * size, -torch.inf)
        S, B = A.shape[:2]
        return ([a_x, a_y], const.reshape(S, B, -1).sum(-1),
                torch.where(torch.isfinite(const), const.abs(), 0.0).reshape(S, B, -1).sum(-1))

    def error(self, node, ar, mags, errs):
        if not self._product(node):
            return super().error(node, ar, mags, errs)
        return errs[0] * mags[1] + mags[0] * errs[1] + ar.single * mags[0] * mags[1] + ar.underflow
