"""Fake quantization with the arithmetic of onnxruntime's QuantizeLinear/DequantizeLinear, differentiable.

q = saturate(round_half_even(x / s) + z), x̂ = (q - z)·s, with the straight-through estimator (Bengio et al. 2013):
the rounding's derivative is taken as 1, the saturation's as 0 outside its range. Written here rather than taken from
`torch.fake_quantize_per_*_affine` (which also rounds half to even) because torch multiplies by a float32
reciprocal, x·(1/s), where QuantizeLinear divides, x/s: the two round differently at some ties, and the exported
graph divides. Shared by the artifact surrogate (evaluation/surrogate.py) and quantization-aware training
(training/qat.py), so both compute what the QDQ graph computes.
"""
from __future__ import annotations

import torch

RANGES = {"uint8": (0, 255), "int8": (-128, 127), "int32": (-2**31, 2**31 - 1)}
WEIGHT_RANGE = (-127, 127)  # onnxruntime's symmetric int8 weights: a range symmetric about zero


class RoundSTE(torch.autograd.Function):
    """round half to even forward (torch.round), identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | float, low: int, high: int) -> torch.Tensor:
    """saturate(round_half_even(x / scale) + zero) to [low, high], as x's dtype; scale and zero broadcast."""
    return torch.clamp(RoundSTE.apply(x / scale) + zero, low, high)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | float) -> torch.Tensor:
    return (q - zero) * scale


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | float, low: int, high: int
                  ) -> torch.Tensor:
    """dequantize(quantize(x)): x on the grid of (scale, zero), saturated, with a straight-through gradient."""
    return dequantize(quantize(x, scale, zero, low, high), scale, zero)


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 scales as onnxruntime computes them: max|w| / 127 (1 for an all-zero
    channel), shaped to broadcast over the weight, detached (the scale follows the weights, it is not trained)."""
    absmax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    scale = torch.where(absmax > 0, absmax / WEIGHT_RANGE[1], torch.ones_like(absmax))
    return scale.reshape((-1,) + (1,) * (weight.ndim - 1))
