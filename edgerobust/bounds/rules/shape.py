"""Structural operators: Flatten, Reshape, Transpose, Identity/Dropout (inference), Concat, and Cast.

They move values without arithmetic, so bounds and errors map through (axis 0, the batch, stays in place). Cast to
float16 rounds once: e' = e + u16·a; a cast to a wider type is exact.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch

from .base import Structural, register

U16 = 2.0 ** -11


@register("Flatten")
class Flatten(Structural):
    """Flatten from axis 1."""

    def forward(self, node, x):
        if node.attr("axis", 1) != 1:
            raise node.refuse("Flatten at an axis other than 1 mixes the batch")
        return x.reshape(x.shape[0], -1)


@register("Reshape")
class Reshape(Structural):
    """Reshape to a constant shape, axis 0 (the batch) kept."""

    def forward(self, node, x):
        shape = node.const(1)
        if shape is None:
            raise node.refuse("the target shape is computed, not constant")
        shape = [int(s) for s in shape.tolist()]
        if node.attr("allowzero", 0) and 0 in shape:
            raise node.refuse("allowzero")
        rest = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)][1:]
        if not rest or (-1 not in rest and int(np.prod(rest)) != int(np.prod(x.shape[1:]))):
            raise node.refuse(f"a target shape {shape} that moves values across the batch axis")
        return x.reshape(x.shape[0], *rest)


@register("Transpose")
class Transpose(Structural):
    """Permutation of axes that keeps axis 0."""

    def forward(self, node, x):
        perm = list(node.attr("perm", list(reversed(range(x.dim())))))
        if perm[0] != 0:
            raise node.refuse("a permutation that moves the batch axis")
        return x.permute(*perm)


@register("Identity", "Dropout")
class Identity(Structural):
    """The input itself (Dropout at inference)."""

    def forward(self, node, x):
        return x


@register("Concat")
class Concat(Structural):
    """Concatenation of computed tensors along an axis other than the batch."""

    def forward(self, node, *xs):
        axis = node.attr("axis")
        if axis % xs[0].dim() == 0:
            raise node.refuse("concatenation along the batch axis")
        if len(xs) != len(node.inputs):
            raise node.refuse("a constant operand")
        return torch.cat(xs, axis)


@register("Cast")
class Cast(Structural):
    """A cast between float types: exact in value except the rounding to float16."""

    def forward(self, node, x):
        if node.attr("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            raise node.refuse("a cast to a non-float type")
        return x

    def error(self, node, ar, mags, errs):
        self.forward(node, errs[0])
        if node.attr("to") == onnx.TensorProto.FLOAT16:
            return errs[0] + U16 * mags[0]
        return errs[0]
