"""Elementwise arithmetic: Add/Sub of two computed tensors (residuals), Add/Sub/Mul/Div by a constant (the input
normalisation (x - mean) / std among them).

Error terms (one rounding of the result; a constant stored rounded by u_w):
x ± c: e + u_w|c| + single·(a + |c|(1 + u_w)); x·c: |c|e + u_w|c|a + single·|c|(1 + u_w)a + η_min;
x / c: (e + u_w a)/|ĉ|_min + single·a/|ĉ|_min + η_min with |ĉ| >= |c|(1 - u_w); x1 ± x2: e1 + e2 + single·(a1 + a2).
"""
from __future__ import annotations

from .base import Linear, register


@register("Add", "Sub", "Mul", "Div")
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
