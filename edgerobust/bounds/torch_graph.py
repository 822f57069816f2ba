"""The PyTorch graph source: the bound engine's `Graph` of a live sequential model, for certified training.

The nodes are the ONNX operators the exported artifact would hold (Song's PCA first layer as Flatten, Sub, one
MatMul by its projection W·Wᵀ, Add, Reshape; Sub/Div for the input normalisation, Conv, Gemm, BatchNormalization,
Relu, Clip, MaxPool, AveragePool, Flatten), and their constants are the model's own parameters and buffers, not
copies (the PCA projection aside, formed once from its fixed basis): the rules read them at every call, so the
bounds follow the optimiser and gradients flow into the weights (IBP and CROWN-IBP losses, training/certified.py).
One rule set serves both sources (issue 22); a batch norm is bounded with its running statistics (eval mode), as
the artifact computes it. Models that are not a chain of these layers (residual blocks) are refused in one line:
export them and certify the ONNX artifact instead.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models.normalize import Normalize
from ..models.pca import PCAProjection
from .graph import BoundError, Graph, Node


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


class _Builder:
    def __init__(self, input_shape: Sequence[int] | None = None):
        self.input_shape = None if input_shape is None else [int(s) for s in input_shape]
        self.nodes: list[Node] = []
        self.consts: dict[str, torch.Tensor] = {}
        self.last = "input"

    def add(self, op: str, consts: Sequence[torch.Tensor | None] = (), attrs: dict | None = None) -> None:
        index = len(self.nodes)
        names = [self.last]
        for k, c in enumerate(consts):
            if c is None:
                names.append("")
                continue
            names.append(f"c{index}.{k}")
            self.consts[names[-1]] = c
        out = f"t{index}"
        self.nodes.append(Node(op, names, [out], attrs or {}, f"{op.lower()}{index}", self.consts))
        self.last = out

    def module(self, name: str, m: nn.Module) -> None:
        if isinstance(m, nn.Sequential):
            for child_name, child in m.named_children():
                self.module(f"{name}.{child_name}" if name else child_name, child)
        elif isinstance(m, Normalize):
            self.add("Sub", [m.mean])
            self.add("Div", [m.std])
        elif isinstance(m, PCAProjection):  # Flatten, Sub, MatMul by P = W·Wᵀ, Add, Reshape
            if self.nodes or self.input_shape is None:
                raise BoundError(f"cannot bound layer '{name}': Song's PCA layer is bounded as the model's first "
                                 "layer, with the input shape given (from_module(model, input_shape))")
            self.add("Flatten")
            self.add("Sub", [m.mean])
            # One product by the D×D projection, not two by W and Wᵀ as export writes it: the same real function,
            # but an interval through W then Wᵀ widens by |W|·|Wᵀ| (~13× on digits at k = 5), through P by |P| (~2×);
            # the basis is fitted once and not trained, so P is formed once, on its device and in its dtype.
            with torch.no_grad():
                self.add("MatMul", [m.basis @ m.basis.T])
            self.add("Add", [m.mean])
            self.add("Reshape", [torch.tensor([0, *self.input_shape], device=m.mean.device)])
        elif isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str) or m.padding_mode != "zeros":
                raise BoundError(f"cannot bound layer '{name}': padding '{m.padding}' ({m.padding_mode}); use integer "
                                 "zero padding")
            p = _pair(m.padding)
            self.add("Conv", [m.weight, m.bias], {"pads": p + p, "strides": _pair(m.stride),
                                                   "dilations": _pair(m.dilation), "group": m.groups})
        elif isinstance(m, nn.Linear):
            self.add("Gemm", [m.weight, m.bias], {"transB": 1})
        elif isinstance(m, nn.ReLU):
            self.add("Relu")
        elif isinstance(m, (nn.ReLU6, nn.Hardtanh)):
            low, high = (0.0, 6.0) if isinstance(m, nn.ReLU6) else (m.min_val, m.max_val)
            self.add("Clip", attrs={"min": float(low), "max": float(high)})
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise BoundError(f"cannot bound layer '{name}': Flatten other than from axis 1")
            self.add("Flatten")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.running_var is None:
                raise BoundError(f"cannot bound layer '{name}': a batch norm without running statistics")
            gamma = m.weight if m.weight is not None else torch.ones_like(m.running_var)
            beta = m.bias if m.bias is not None else torch.zeros_like(m.running_mean)
            self.add("BatchNormalization", [gamma, beta, m.running_mean, m.running_var], {"epsilon": m.eps})
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k = _pair(m.kernel_size)
            s = _pair(m.stride if m.stride is not None else m.kernel_size)
            p = _pair(m.padding)
            attrs = {"kernel_shape": k, "strides": s, "pads": p + p, "ceil_mode": int(m.ceil_mode)}
            if isinstance(m, nn.MaxPool2d):
                self.add("MaxPool", attrs={**attrs, "dilations": _pair(m.dilation)})
            else:
                self.add("AveragePool", attrs={**attrs, "count_include_pad": int(m.count_include_pad)})
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            pass  # inference: the input itself
        else:
            raise BoundError(f"cannot bound layer '{name or type(m).__name__}' ({type(m).__name__}): the PyTorch "
                             "source takes chains of Conv2d, Linear, ReLU, ReLU6, BatchNorm, pooling and Flatten "
                             "after an optional PCA first layer (e.g. scnn2, cifar-teacher, mlp)")


def from_module(model: nn.Module, input_shape: Sequence[int] | None = None) -> Graph:
    """The engine's graph of `model` (a `NormalizedClassifier` or any chain of supported layers), live weights.
    `input_shape` (C, H, W): needed by a PCA first layer (models/pca.py), which works on the flattened image."""
    builder = _Builder(input_shape)
    builder.module("", model)
    if not builder.nodes:
        builder.add("Identity")
    return Graph(builder.nodes, builder.consts, "input", builder.last)
