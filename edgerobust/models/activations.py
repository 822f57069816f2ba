"""Activation swapping: every ReLU / ReLU6 of a zoo model replaced by another activation, the other weights kept
(Peconi: KAF in place of ReLU). `ACTIVATIONS` names what a model can carry; the name (and options) is part of the
model's recorded identity (the manifest's `model.activation`), so every command rebuilds the same network.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..compute_device import placement
from ..errors import EdgeRobustError
from ..registry import Registry
from .kaf import KAF
from .probe import input_shapes

ACTIVATIONS: Registry = Registry("activation")  # builder(channels, **options) -> nn.Module


class KWinners(nn.Module):
    """k-winners-take-all (Xiao et al. 2020): per example, keep the `ratio` largest activations, zero the rest."""

    def __init__(self, ratio: float = 0.2):
        super().__init__()
        if not 0 < ratio <= 1:
            raise EdgeRobustError(f"kwta ratio must be in (0, 1], got {ratio}")
        self.ratio = float(ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        k = max(1, int(round(self.ratio * int(flat.shape[1]))))  # a Python int while tracing too (export)
        threshold = flat.topk(k, dim=1).values[:, -1:]
        return (flat * (flat >= threshold).to(flat.dtype)).view_as(x)

    def lipschitz_constant(self) -> float:
        return float("inf")  # discontinuous: no Lipschitz constant


for _name, _cls, _help in (("relu", nn.ReLU, "ReLU (the zoo's own)"), ("elu", nn.ELU, "ELU"),
                           ("swish", nn.SiLU, "Swish / SiLU, x·σ(x)"), ("gelu", nn.GELU, "GELU (erf form)"),
                           ("softplus", nn.Softplus, "Softplus, log(1 + eˣ)")):
    ACTIVATIONS.register(_name, _help)(lambda channels, _cls=_cls, **options: _cls(**options))
ACTIVATIONS.register("kwta", "k-winners-take-all (keep the top ratio per example)")(
    lambda channels, **options: KWinners(**options))
ACTIVATIONS.register("kaf", "kernel activation function per channel (Scardapane et al.; D, b, gamma, init)")(
    lambda channels, **options: KAF(channels, **options))

SWAPPED = (nn.ReLU, nn.ReLU6)


def parse_activation(value: str | dict | None) -> dict[str, Any] | None:
    """'kaf' or {"name": "kaf", "options": {...}} as the recorded form; an unknown name fails listing the valid."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"name": value, "options": {}}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not isinstance(
            value.get("options", {}), dict):
        raise EdgeRobustError(f"activation {value!r} must be a name such as kaf, or a table with name and options")
    ACTIVATIONS.get(value["name"])
    return {"name": value["name"], "options": dict(value.get("options", {}))}


def swap_activations(model: nn.Module, activation: str | dict, input_shape: Sequence[int]) -> nn.Module:
    """Replace each ReLU / ReLU6 module of `model` (in place) by the activation; returns the model."""
    spec = parse_activation(activation)
    if spec["name"] == "relu":
        return model
    channels = _channels(model, input_shape)
    builder = ACTIVATIONS.get(spec["name"])
    where = placement(model)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, SWAPPED):
                try:
                    new = builder(channels[child], **spec["options"])
                except TypeError as exc:
                    raise EdgeRobustError(f"activation {spec['name']}: bad options {spec['options']} ({exc})") from None
                setattr(parent, child_name, new.to(device=where.device, dtype=where.dtype))
    return model


def _channels(model: nn.Module, input_shape: Sequence[int]) -> dict[nn.Module, int]:
    """Axis 1 of the input each ReLU sees in one forward of a zero input (a KAF has one set of α per channel)."""
    return {m: shape[0] for m, shape in input_shapes(model, input_shape).items() if isinstance(m, SWAPPED)}
