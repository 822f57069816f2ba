"""The graph the bound engine walks: nodes in topological order, constants, one input and one output.

`from_onnx` reads an exported artifact (fp16 initialisers included: every float constant is widened to float64,
exactly). A PyTorch source for certified training (the same rules over live, differentiable parameters: `Linear`'s
backward already keeps the autograd graph when gradients are enabled) is not built yet.
The batch is always axis 0: rules that would mix it (a Reshape or Transpose over axis 0) are refused.
An int8 QDQ artifact: every DequantizeLinear of constants (the integer weights and int32 biases) is folded into an
exact float64 constant (q - z)·s (exact: |q - z| < 2^29 times a float32 scale fits float64's 53 bits; larger is
refused), its integers kept in `Graph.quantized`; every QuantizeLinear gets its rounding window from a static pass
over the input box (quantized.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..errors import EdgeRobustError


class BoundError(EdgeRobustError):
    """The engine cannot bound this graph (an operator without a rule, an unsupported attribute)."""


@dataclass
class Node:
    """One operator: its type, input and output names, attributes, and the graph's constants to read them."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    name: str
    consts: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def const(self, index: int) -> torch.Tensor | None:
        """The constant at input `index`, or None when that input is computed (or absent)."""
        if index >= len(self.inputs) or not self.inputs[index]:
            return None
        return self.consts.get(self.inputs[index])

    @property
    def dynamic(self) -> list[str]:
        """The computed inputs, in order (constants and absent optional inputs left out)."""
        return [n for n in self.inputs if n and n not in self.consts]

    def label(self) -> str:
        return f"{self.op} {self.name or self.outputs[0]}"

    def refuse(self, why: str) -> BoundError:
        return BoundError(f"cannot bound {self.label()}: {why}")


@dataclass
class Graph:
    nodes: list[Node]
    consts: dict[str, torch.Tensor]
    input: str
    output: str
    const_dtypes: dict[str, str] = field(default_factory=dict)
    # folded DequantizeLinear constants: name -> (integers q, scale s, zero point z, axis), as in the artifact
    quantized: dict[str, tuple] = field(default_factory=dict)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind == "f":
        return torch.from_numpy(array.astype(np.float64))  # fp16 and fp32 widen to float64 exactly
    return torch.from_numpy(np.array(array, copy=True))


EXACT_INTEGERS = 2 ** 29  # |q - z| below this times a float32 scale is exact in float64


def _dequantize(node: Node) -> tuple[torch.Tensor, tuple]:
    """(q - z)·s of a DequantizeLinear whose inputs are all constants, exactly in float64, and (q, s, z, axis)."""
    q, s, z = node.const(0), node.const(1), node.const(2)
    if s is None or (len(node.inputs) > 2 and node.inputs[2] and z is None):
        raise node.refuse("its scale or zero point is computed, not constant")
    if node.attr("block_size", 0):
        raise node.refuse("blocked quantization (block_size) has no rule")
    z = torch.zeros((), dtype=q.dtype) if z is None else z
    z, s = z.reshape(_per_axis(node, z, q.dim())), s.reshape(_per_axis(node, s, q.dim()))
    centred = q.to(torch.float64) - z.to(torch.float64)
    if bool((centred.abs() >= EXACT_INTEGERS).any()):
        raise node.refuse(f"integers up to {float(centred.abs().max()):.3g} cannot be dequantized exactly in float64")
    return centred * s.to(torch.float64), (q, s, z, node.attr("axis", 1))


def _per_axis(node: Node, value: torch.Tensor, dims: int) -> list[int]:
    if value.dim() == 0 or value.numel() == 1:
        return [1] * dims if dims else []
    shape = [1] * dims
    shape[node.attr("axis", 1) % dims] = value.numel()
    return shape


def _input_shape(proto: onnx.ModelProto, name: str) -> tuple[int, ...] | None:
    """The graph input's shape without the batch axis, or None where a dimension is not a fixed number."""
    for value in proto.graph.input:
        if value.name == name:
            dims = value.type.tensor_type.shape.dim[1:]
            return tuple(d.dim_value for d in dims) if all(d.dim_value > 0 for d in dims) else None
    return None


def from_onnx(proto: onnx.ModelProto) -> Graph:
    """The engine's graph of an ONNX model: initialisers and Constant nodes become float64 constants, constant
    DequantizeLinear nodes exact float64 weights, and QuantizeLinear nodes get their windows (module docstring)."""
    consts, dtypes, quantized = {}, {}, {}
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        consts[init.name], dtypes[init.name] = _to_tensor(array), str(array.dtype)
    nodes = []
    for n in proto.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant" and "value" in attrs:
            array = numpy_helper.to_array(attrs["value"])
            consts[n.output[0]], dtypes[n.output[0]] = _to_tensor(array), str(array.dtype)
            continue
        node = Node(n.op_type, list(n.input), list(n.output), attrs, n.name, consts)
        if n.op_type == "DequantizeLinear" and not node.dynamic:
            consts[n.output[0]], quantized[n.output[0]] = _dequantize(node)
            dtypes[n.output[0]] = f"float64 (dequantized {quantized[n.output[0]][0].dtype})"
            continue
        nodes.append(node)
    inputs = [i.name for i in proto.graph.input if i.name not in consts]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise BoundError(f"the bound engine needs one input and one output; the graph has {len(inputs)} and "
                         f"{len(proto.graph.output)}")
    graph = Graph(nodes, consts, inputs[0], proto.graph.output[0].name, dtypes, quantized)
    if any(n.op == "QuantizeLinear" for n in nodes):
        from .quantized import annotate

        shape = _input_shape(proto, inputs[0])
        if shape is None:
            for n in (n for n in nodes if n.op == "QuantizeLinear"):
                n.attrs.setdefault("edgerobust.window", "the graph input's shape is not fixed (needed for the windows)")
        else:
            annotate(graph, shape)
    return graph
