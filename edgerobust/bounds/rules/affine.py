"""Dot-product operators: Conv, Gemm, MatMul, and BatchNormalization (folded or not).

Error term (Higham §3.1, eq. (3.5)), y = W x + b of fan-in n (bias counted):
e' = |W| e + dot(n)·(|W| a + |b|) + n·η_min, a bounding the computed |x|, dot(n) = u_w + (1 + u_w)·kernel(n).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import Linear, Unbounded, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _dot_error(ar, n, e_through, a_through, bias):
    factor = ar.dot(n)
    if not np.isfinite(factor):
        raise Unbounded(f"fan-in {n}: n·u >= 1 (γ_n is infinite)")
    return e_through + factor * (a_through + (bias.abs() if bias is not None else 0.0)) + n * ar.underflow


@register("Conv")
class Conv(Linear):
    """Convolution with constant weights (explicit pads; any dimension, groups, dilations)."""

    def _parts(self, node):
        w, b = node.const(1), node.const(2)
        if w is None:
            raise node.refuse("the weights are computed, not constant")
        if node.attr("auto_pad", "NOTSET") != "NOTSET":
            raise node.refuse("auto_pad; export with explicit pads")
        return w, b

    def _apply(self, node, x, w, b):
        dims = w.dim() - 2
        pads = node.attr("pads", [0] * (2 * dims))
        pad = [p for i in reversed(range(dims)) for p in (pads[i], pads[i + dims])]  # F.pad: last axis first
        return _CONV[dims](F.pad(x, pad), w.to(x.dtype), None if b is None else b.to(x.dtype),
                           node.attr("strides", [1] * dims), 0, node.attr("dilations", [1] * dims),
                           node.attr("group", 1))

    def forward(self, node, x):
        w, b = self._parts(node)
        return self._apply(node, x, w, b)

    def abs_linear(self, node, t):
        w, _ = self._parts(node)
        return self._apply(node, t, w.abs(), None)

    def adjoint(self, node, flat, shapes):
        """The transposed convolution onto the padded input (output_padding restores the rows a stride leaves
        over), cropped to the input."""
        w, _ = self._parts(node)
        dims, shape = w.dim() - 2, shapes[0]
        pads = node.attr("pads", [0] * (2 * dims))
        strides, dilations = node.attr("strides", [1] * dims), node.attr("dilations", [1] * dims)
        padded = [shape[1 + i] + pads[i] + pads[i + dims] for i in range(dims)]
        extra = [padded[i] - ((flat.shape[2 + i] - 1) * strides[i] + dilations[i] * (w.shape[2 + i] - 1) + 1)
                 for i in range(dims)]
        g = _CONV_T[dims](flat, w.to(flat.dtype), None, strides, 0, extra, node.attr("group", 1), dilations)
        return [g[(slice(None), slice(None), *[slice(pads[i], pads[i] + shape[1 + i]) for i in range(dims)])]]

    def adjoint_terms(self, node):
        """Output channels of a group × the taps that reach one input position (⌈k/s⌉ per axis without dilation)."""
        w, _ = self._parts(node)
        dims = w.dim() - 2
        strides, dilations = node.attr("strides", [1] * dims), node.attr("dilations", [1] * dims)
        taps = [-(-k // s) if d == 1 else k for k, s, d in zip(w.shape[2:], strides, dilations, strict=True)]
        return int(w.shape[0] // node.attr("group", 1) * np.prod(taps))

    def geometry(self, node):
        """(strides, leading pads, dilations, kernel) of a 2-D convolution (4-D weights), None for other dimensions:
        the fast pass keeps coefficient windows through 2-D convolutions only."""
        w, _ = self._parts(node)
        if w.dim() != 4:
            return None
        return (list(node.attr("strides", [1, 1])), list(node.attr("pads", [0] * 4)[:2]),
                list(node.attr("dilations", [1, 1])), list(w.shape[2:]))

    def adjoint_window(self, node, a, w):
        """Lᵀ·a for coefficients a [N, C_out, h, w] on a window of the output: the coefficients on the input window
        [N, C_in, (h - 1)·s + d·(k - 1) + 1, ...] it reads (padding included; `w` the weights in a's dtype)."""
        strides, _, dilations, _ = self.geometry(node)
        return F.conv_transpose2d(a, w, None, strides, 0, 0, node.attr("group", 1), dilations)

    def error(self, node, ar, mags, errs):
        w, b = self._parts(node)
        n = int(np.prod(w.shape[1:])) + (b is not None)
        bias = None if b is None else b.reshape(1, -1, *([1] * (w.dim() - 2)))
        through_e, through_a = self.abs_linear(node, torch.cat([errs[0], mags[0]])).chunk(2)
        return _dot_error(ar, n, through_e, through_a, bias)


@register("Gemm")
class Gemm(Linear):
    """x·W (+ b) with a constant W (transB allowed; alpha, beta scale W and b)."""

    def _parts(self, node):
        w, b = node.const(1), node.const(2)
        if w is None or node.attr("transA", 0):
            raise node.refuse("only x·W (+ b) with a constant W is supported")
        w = (w.T if node.attr("transB", 0) else w) * node.attr("alpha", 1.0)
        return w, None if b is None else b * node.attr("beta", 1.0)

    def forward(self, node, x):
        w, b = self._parts(node)
        y = x @ w.to(x.dtype)
        return y if b is None else y + b.to(x.dtype)

    def abs_linear(self, node, t):
        return t @ self._parts(node)[0].abs().to(t.dtype)

    def adjoint(self, node, flat, shapes):
        return [flat @ self._parts(node)[0].to(flat.dtype).T]

    def adjoint_terms(self, node):
        return int(self._parts(node)[0].shape[-1])

    def error(self, node, ar, mags, errs):
        w, b = self._parts(node)
        if node.attr("alpha", 1.0) != 1.0 or node.attr("beta", 1.0) != 1.0:
            raise node.refuse("alpha or beta other than 1 has no error rule")
        through_e, through_a = self.abs_linear(node, torch.cat([errs[0], mags[0]])).chunk(2)
        return _dot_error(ar, w.shape[0] + (b is not None), through_e, through_a, b)


@register("MatMul")
class MatMul(Gemm):
    """x·W with a constant W."""

    def _parts(self, node):
        w = node.const(1)
        if w is None or node.const(0) is not None:
            raise node.refuse("only x·W with a constant W is supported (a product of two computed tensors is not "
                              "linear)")
        return w, None


@register("BatchNormalization")
class BatchNormalization(Linear):
    """Inference batch norm y = x·γ/√(var + ε) + (β - mean·γ/√(var + ε)), per channel."""

    def _parts(self, node, dims):
        gamma, beta, mean, var = (node.const(i) for i in range(1, 5))
        if any(t is None for t in (gamma, beta, mean, var)):
            raise node.refuse("statistics that are computed, not constant (training mode)")
        scale = gamma / torch.sqrt(var + node.attr("epsilon", 1e-5))
        shape = (1, -1, *([1] * (dims - 2)))
        return scale.reshape(shape), (beta - mean * scale).reshape(shape)

    def mixes(self, node):
        return False  # one scale per channel

    def diagonal(self, node, shape):
        return self._parts(node, len(shape) + 1)[0]  # [1, C, 1, ...]: one scale per channel

    def forward(self, node, x):
        scale, shift = self._parts(node, x.dim())
        return x * scale.to(x.dtype) + shift.to(x.dtype)

    def abs_linear(self, node, t):
        return t * self._parts(node, t.dim())[0].abs().to(t.dtype)

    def error(self, node, ar, mags, errs):
        scale, shift = self._parts(node, mags[0].dim())
        coeff = ar.weight_roundoff + ar.gamma(5)  # scale and shift each come from <= 5 rounded operations
        s = scale.abs() * mags[0] + shift.abs()
        return scale.abs() * errs[0] + (coeff + ar.kernel(2) * (1 + coeff)) * s + ar.underflow
