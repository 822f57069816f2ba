"""Pooling: AveragePool and GlobalAveragePool (linear), MaxPool (monotone, relaxed), LpPool and GlobalLpPool.

Average over k values: e' = mean(e) + kernel(k + 1)·mean(a) + η_min (the sum, then the division).
MaxPool: IBP maps the bounds through; CROWN's lower bound is the input with the largest lower bound in the window
(y >= x_i for any i), its upper bound the constant max of the window's upper bounds (both exact at ε = 0); α-CROWN
(Xu et al. 2021) optimises the lower line over every convex combination of the window, y >= Σ λ_i x_i (λ >= 0,
Σ λ_i = 1 over its real positions: the max is at least any weighted mean), from CROWN's one-hot choice; the
error term is the window's largest e (max is exact and 1-Lipschitz in the max norm).
LpPool (Peck's thesis, Thm 5.3; imported ONNX graphs, e.g. converted Caffe models; PyTorch's exporter lowers
LPPool2d to primitive operators instead): y = ‖x_W‖_p over each window W, zero padding. IBP maps the bounds of |x|
through (monotone in each |x_i|). CROWN: y is a norm, so Hölder gives y >= g·x for every g with ‖g‖_q <= 1
(1/p + 1/q = 1), exactly at x = m for g the gradient at the box's midpoint m, g_i = sign(m_i)·(|m_i| / y(m))^(p-1)
(the tangent plane of a positively homogeneous convex function passes through 0: no constant); g is shrunk by
1 - SLACK so its own float64 rounding cannot push ‖g‖_q over 1. The upper bound is the constant IBP upper bound.
Error term: |‖x̂‖_p - ‖x‖_p| <= ‖x̂ - x‖_p (the triangle inequality) bounds what the input errors do; the kernel
(|x|^p by the library's pow, K-term sum, pow(·, 1/p)) is within rel·y, rel from γ_(K+1) and two library calls of
at most FUNCTION_ULPS ulps each (the assumption smooth.py states), plus (K·η)^(1/p) for powers that underflow.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import SLACK, Linear, Rule, Unbounded, register
from .smooth import FUNCTION_ULPS

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _window(node, dims):
    if list(node.attr("dilations", [1] * dims)) != [1] * dims:
        raise node.refuse("dilation")
    pads = node.attr("pads", [0] * 2 * dims)
    if list(pads[:dims]) != list(pads[dims:]):
        raise node.refuse("asymmetric pads")
    if node.attr("auto_pad", "NOTSET") != "NOTSET":
        raise node.refuse("auto_pad; export with explicit pads")
    return (node.attr("kernel_shape"), node.attr("strides", [1] * dims), list(pads[:dims]),
            bool(node.attr("ceil_mode", 0)))


class _Average(Linear):
    def count(self, node, shape) -> int:
        raise NotImplementedError

    def error(self, node, ar, mags, errs):
        k = self.count(node, mags[0].shape)
        return self.forward(node, errs[0]) + ar.kernel(k + 1) * self.forward(node, mags[0]) + ar.underflow


@register("AveragePool")
class AveragePool(_Average):
    """Mean over sliding windows."""

    def forward(self, node, x):
        dims = x.dim() - 2
        kernel, strides, pads, ceil = _window(node, dims)
        return _AVG[dims](x, kernel, strides, pads, ceil_mode=ceil,
                          count_include_pad=bool(node.attr("count_include_pad", 0)))

    def count(self, node, shape):
        return int(np.prod(node.attr("kernel_shape")))


@register("GlobalAveragePool")
class GlobalAveragePool(_Average):
    """Mean over all spatial positions."""

    def forward(self, node, x):
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def count(self, node, shape):
        return int(np.prod(shape[2:]))


@register("MaxPool")
class MaxPool(Rule):
    """Max over sliding windows (no dilation)."""

    nonlinear = True

    def _pool(self, node, x, indices=False):
        dims = x.dim() - 2
        if node.attr("storage_order", 0):
            raise node.refuse("column-major storage order")
        kernel, strides, pads, ceil = _window(node, dims)
        return _MAX[dims](x, kernel, strides, pads, ceil_mode=ceil, return_indices=indices)

    def forward(self, node, x):
        return self._pool(node, x)

    def interval(self, node, bounds):
        return self._pool(node, bounds[0]), self._pool(node, bounds[1])

    def _patches(self, node, x):
        """(F.unfold arguments, window size k) for a 2-D pool whose windows F.unfold reproduces (no ceil_mode), else
        None: α-CROWN then keeps CROWN's choice there."""
        if x.dim() != 4:
            return None
        kernel, strides, pads, ceil = _window(node, 2)
        if ceil or node.attr("storage_order", 0):
            return None
        return {"kernel_size": tuple(kernel), "stride": tuple(strides), "padding": tuple(pads)}, int(np.prod(kernel))

    def alpha_start(self, node, lo, hi):
        """α-CROWN's variables [B, C, k, L]: the weights λ of the lower line y >= Σ λ_i x_i over each window (k
        positions, L windows), at CROWN's choice (1 at the largest lower bound, 0 elsewhere)."""
        found = self._patches(node, lo)
        if found is None:
            return None
        args, k = found
        B, C = lo.shape[:2]
        _, index = self._pool(node, lo, indices=True)  # flat index (in H·W) of the largest lower bound per window
        flat = torch.arange(lo[0, 0].numel(), dtype=lo.dtype, device=lo.device).reshape(1, 1, *lo.shape[2:])
        places = F.unfold(flat.expand(B * C, 1, *lo.shape[2:]) + 1, **args).reshape(B, C, k, -1) - 1  # -1: padding
        return (places == index.reshape(B, C, 1, -1).to(lo.dtype)).to(lo.dtype)

    def _weights(self, node, lo, alpha, args, k):
        """λ >= 0 summing to 1 over each window's real positions (padding gets 0) from any α: max_i x_i >= Σ λ_i x_i
        for every such λ (a convex combination), so the lower line is sound whatever α is; a window whose α has no
        positive weight on a real position takes CROWN's choice."""
        B, C = lo.shape[:2]
        real = F.unfold(torch.ones_like(lo[:1, :1]), **args).reshape(1, 1, 1, k, -1)  # 0 at padding
        w = alpha.nan_to_num(0.0).clamp(0, 1) * real
        total = w.sum(3, keepdim=True)
        start = self.alpha_start(node, lo, lo).unsqueeze(0)
        return torch.where(total > 0, w / torch.where(total > 0, total, 1.0), start)

    def alpha_project(self, node, alpha):
        alpha.clamp_(0, 1)  # the normalisation in `_weights` makes each window's weights a convex combination

    def backward(self, node, A, bounds, alpha=None):
        lo, hi = bounds
        S, B = A.shape[:2]
        if alpha is not None:
            args, k = self._patches(node, lo)
            C = lo.shape[1]
            lam = self._weights(node, lo, alpha, args, k)  # [S, B, C, k, L]
            top = self._pool(node, hi)
            pos, neg = A.clamp_min(0), A.clamp_max(0)
            cols = (pos.reshape(S, B, C, 1, -1) * lam).reshape(S * B, C * k, -1)
            a_in = F.fold(cols, tuple(lo.shape[2:]), **args).reshape(S, *lo.shape)
            const = neg * top.unsqueeze(0)
            return [a_in], const.reshape(S, B, -1).sum(-1), const.abs().reshape(S, B, -1).sum(-1)
        _, index = self._pool(node, lo, indices=True)  # flat index of the largest lower bound per window
        top = self._pool(node, hi)
        pos, neg = A.clamp_min(0), A.clamp_max(0)
        C = lo.shape[1]
        a_in = torch.zeros((S, B, C, int(np.prod(lo.shape[2:]))), dtype=A.dtype, device=A.device)
        idx = index.reshape(1, B, C, -1).expand(S, -1, -1, -1)
        a_in = a_in.scatter_add(3, idx, pos.reshape(S, B, C, -1))
        const = neg * top.unsqueeze(0)
        return ([a_in.reshape(S, *lo.shape)], const.reshape(S, B, -1).sum(-1),
                const.abs().reshape(S, B, -1).sum(-1))

    def error(self, node, ar, mags, errs):
        return self._pool(node, errs[0])


def _sum_pool(x, kernel, strides, pads, ceil):
    """Σ over each window (zero padding): avg_pool with divisor 1 (a 1-D pool as a 2-D one of height 1)."""
    dims = x.dim() - 2
    if dims == 1:
        return _sum_pool(x.unsqueeze(2), [1, *kernel], [1, *strides], [0, *pads], ceil).squeeze(2)
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return pool(x, kernel, strides, pads, ceil_mode=ceil, count_include_pad=True, divisor_override=1)


class _Lp(Rule):
    """‖x_W‖_p over windows W (module docstring): shared by LpPool and GlobalLpPool."""

    nonlinear = True

    def power(self, node) -> float:
        p = float(node.attr("p", 2))
        if p < 1:
            raise node.refuse(f"p = {p:g} (an Lp pool is a norm only for p >= 1)")
        return p

    def count(self, node, shape) -> int:
        raise NotImplementedError

    def sums(self, node, t):
        """Σ_W t over each window."""
        raise NotImplementedError

    def forward(self, node, x):
        p = self.power(node)
        return self.sums(node, x.abs() ** p) ** (1 / p)

    def interval(self, node, bounds):
        lo, hi = bounds
        small = torch.where(lo >= 0, lo, torch.where(hi <= 0, -hi, torch.zeros_like(lo)))  # min |x| on [lo, hi]
        y_lo, y_hi = self.forward(node, small), self.forward(node, torch.maximum(lo.abs(), hi.abs()))
        return (y_lo * (1 - SLACK)).nan_to_num(nan=0.0), (y_hi * (1 + SLACK)).nan_to_num(nan=torch.inf)

    def backward(self, node, A, bounds, alpha=None):
        p = self.power(node)
        lo, hi = bounds
        S, B = A.shape[:2]
        finite = torch.isfinite(lo) & torch.isfinite(hi)
        m = torch.where(finite, (lo + hi) / 2, torch.zeros_like(lo))  # a g of 0 (y >= 0) where a bound is infinite
        y = self.forward(node, m)
        scale = torch.where(y > 0, y, torch.ones_like(y)) ** (1 - p) * (y > 0)  # 1 / y(m)^(p-1), 0 where y(m) = 0
        pos, neg = A.clamp_min(0), A.clamp_max(0)
        weights = (pos * scale.unsqueeze(0)).reshape(S * B, *y.shape[1:])
        with torch.enable_grad():  # Σ_o w_o·[i ∈ W_o]: the adjoint of the window sum
            z = torch.zeros((S * B, *lo.shape[1:]), dtype=A.dtype, device=A.device, requires_grad=True)
            (spread,) = torch.autograd.grad(self.sums(node, z), z, weights)
        g = torch.sign(m) * m.abs() ** (p - 1) * (1 - SLACK)
        a_in = spread.reshape(S, B, *lo.shape[1:]) * g.unsqueeze(0)
        _, top = self.interval(node, bounds)
        const = neg * top.unsqueeze(0)
        return [a_in], const.reshape(S, B, -1).sum(-1), const.abs().reshape(S, B, -1).sum(-1)

    def error(self, node, ar, mags, errs):
        p = self.power(node)
        K = self.count(node, mags[0].shape)
        if float(mags[0].max()) ** p * K > ar.largest:
            raise Unbounded(f"{node.label()}: the sum of |x|^p may overflow")
        library = FUNCTION_ULPS * ar.unit_roundoff
        if library >= 1:
            raise Unbounded(f"{node.label()}: the library's pow is not bounded in this arithmetic")
        inner = (1 + library) ** 2 * (1 + ar.gamma(K + 1)) - 1  # relative error of the computed Σ|x|^p
        rel = (1 + inner) ** (1 / p) * (1 + library) * (1 + ar.store) - 1
        value = self.forward(node, mags[0])
        underflow = (K * ar.underflow) ** (1 / p) + ar.underflow
        return self.forward(node, errs[0]) + rel * value + underflow


@register("LpPool")
class LpPool(_Lp):
    """‖x‖_p over sliding windows (no dilation)."""

    def sums(self, node, t):
        return _sum_pool(t, *_window(node, t.dim() - 2))

    def count(self, node, shape):
        return int(np.prod(node.attr("kernel_shape")))


@register("GlobalLpPool")
class GlobalLpPool(_Lp):
    """‖x‖_p over all spatial positions."""

    def sums(self, node, t):
        return t.sum(dim=tuple(range(2, t.dim())), keepdim=True)

    def count(self, node, shape):
        return int(np.prod(shape[2:]))
