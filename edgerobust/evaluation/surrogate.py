"""A differentiable surrogate of an exported ONNX artifact, for gradient attacks on what the device runs.

The artifact's own graph (its initialisers, its scales and zero points) is evaluated by the bound engine's exact
operator rules (bounds/rules, float64), with the two QDQ operators added here as fake quantization:
QuantizeLinear is saturate(round_half_even(x / s) + z) with a straight-through gradient (the rounding's derivative
taken as 1 inside the saturation range, 0 outside it, Bengio et al. 2013), DequantizeLinear is (q - z)·s. Weight and
bias DequantizeLinear nodes (all inputs constant) are folded once into float64 constants, so the integer weights
enter exactly. The surrogate computes the QDQ graph's real-valued function; onnxruntime's fused integer kernels
(int32 accumulation, requantization through a float32 scale) can round a value at a tie the other way, so the
attack's points are always judged on the artifact itself (evaluation/artifact.py), never on the surrogate.
"""
from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from ..bounds.graph import BoundError, Node, from_onnx
from ..bounds.rules import RULES
from ..errors import EdgeRobustError
from ..models import fake_quant
from ..models.fake_quant import RANGES

QDQ = ("QuantizeLinear", "DequantizeLinear")


def _axis_view(node: Node, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-tensor (scalar) or per-axis (1-D) scale or zero point shaped to broadcast against `like`."""
    if value.ndim == 0 or value.numel() == 1:
        return value.reshape(())
    axis = node.attr("axis", 1) % like.ndim
    shape = [1] * like.ndim
    shape[axis] = value.numel()
    return value.reshape(shape)


def quantize(node: Node, x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, dtype: str) -> torch.Tensor:
    low, high = RANGES[dtype]
    zero_point = 0.0 if zero is None else _axis_view(node, zero, x).to(x.dtype)
    return fake_quant.quantize(x, _axis_view(node, scale, x).to(x.dtype), zero_point, low, high)


def dequantize(node: Node, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    zero_point = 0.0 if zero is None else _axis_view(node, zero, q).to(q.dtype)
    return fake_quant.dequantize(q, _axis_view(node, scale, q).to(q.dtype), zero_point)


class ArtifactSurrogate(nn.Module):
    """An ONNX artifact (fp32, or int8 QDQ) as a differentiable torch module: float32 pixels in, logits out on the
    input's device and dtype (computed in float64)."""

    def __init__(self, path: str | Path):
        super().__init__()
        try:
            graph = from_onnx(onnx.load(str(path)))
        except Exception as exc:  # noqa: BLE001  (protobuf raises its own DecodeError)
            raise EdgeRobustError(f"cannot read {Path(path).name} as a surrogate: {exc}") from None
        self.graph, self.nodes, self.quantized_dtype = graph, [], {}
        for node in graph.nodes:
            if node.op == "DequantizeLinear" and not node.dynamic:  # weights and biases: folded, exactly
                graph.consts[node.outputs[0]] = dequantize(node, node.const(0).to(torch.float64), node.const(1),
                                                           node.const(2))
                continue
            if node.op == "QuantizeLinear":
                zero = node.const(2)
                self.quantized_dtype[node.outputs[0]] = "uint8" if zero is None else str(zero.dtype).split(".")[-1]
            elif node.op not in QDQ and node.op not in RULES:
                raise BoundError(f"operator {node.op} has no rule in edgerobust/bounds/rules, so the artifact has no "
                                 "differentiable surrogate")
            self.nodes.append(node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.graph.input: x.to(torch.float64)}
        for node in self.nodes:
            ins = [values[n] if n in values else None for n in node.dynamic]
            if any(v is None for v in ins):
                raise node.refuse("an input is computed after it")
            if node.op == "QuantizeLinear":
                out = quantize(node, ins[0], node.const(1), node.const(2), self.quantized_dtype[node.outputs[0]])
            elif node.op == "DequantizeLinear":
                out = dequantize(node, ins[0], node.const(1), node.const(2))
            else:
                out = RULES.get(node.op).forward(node, *ins)
            values[node.outputs[0]] = out
        return values[self.graph.output].to(x.dtype)
