"""The graph the bound engine walks: nodes in topological order, constants, one input and one output.

`from_onnx` reads an exported artifact (fp16 initialisers included: every float constant is widened to float64,
exactly). A PyTorch source for certified training (the same rules over live, differentiable parameters: `Linear`'s
backward already keeps the autograd graph when gradients are enabled) is not built yet.
The batch is always axis 0: rules that would mix it (a Reshape or Transpose over axis 0) are refused.
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


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind == "f":
        return torch.from_numpy(array.astype(np.float64))  # fp16 and fp32 widen to float64 exactly
    return torch.from_numpy(np.array(array, copy=True))


def from_onnx(proto: onnx.ModelProto) -> Graph:
    """The engine's graph of an ONNX model: initialisers and Constant nodes become float64 constants."""
    consts, dtypes = {}, {}
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
        nodes.append(Node(n.op_type, list(n.input), list(n.output), attrs, n.name, consts))
    inputs = [i.name for i in proto.graph.input if i.name not in consts]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise BoundError(f"the bound engine needs one input and one output; the graph has {len(inputs)} and "
                         f"{len(proto.graph.output)}")
    return Graph(nodes, consts, inputs[0], proto.graph.output[0].name, dtypes)
