"""Pooling: AveragePool and GlobalAveragePool (linear), MaxPool (monotone, relaxed).

Average over k values: e' = mean(e) + kernel(k + 1)·mean(a) + η_min (the sum, then the division).
MaxPool: IBP maps the bounds through; CROWN's lower bound is the input with the largest lower bound in the window
(y >= x_i for any i), its upper bound the constant max of the window's upper bounds (both exact at ε = 0); the
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

    def backward(self, node, A, bounds, alpha=None):
        lo, hi = bounds
        S, B = A.shape[:2]
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
