"""Pooling: AveragePool and GlobalAveragePool (linear), MaxPool (monotone, relaxed).

Average over k values: e' = mean(e) + kernel(k + 1)·mean(a) + η_min (the sum, then the division).
MaxPool: IBP maps the bounds through; CROWN's lower bound is the input with the largest lower bound in the window
(y >= x_i for any i), its upper bound the constant max of the window's upper bounds (both exact at ε = 0); α-CROWN
(Xu et al. 2021) optimises the lower line over every convex combination of the window, y >= Σ λ_i x_i (λ >= 0,
Σ λ_i = 1 over its real positions: the max is at least any weighted mean), from CROWN's one-hot choice; the
error term is the window's largest e (max is exact and 1-Lipschitz in the max norm).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import Linear, Rule, register

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _window(node, dims):
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
        if list(node.attr("dilations", [1] * dims)) != [1] * dims or node.attr("storage_order", 0):
            raise node.refuse("dilation or column-major storage order")
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
        if ceil or list(node.attr("dilations", [1, 1])) != [1, 1] or node.attr("storage_order", 0):
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
