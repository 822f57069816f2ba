"""`input_shapes(model, input_shape)`: what each submodule of a model sees, from one eval-mode forward of a zero
input on the model's own device and dtype (activation swapping sizes a KAF by it, the Lipschitz walk its operators).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..compute_device import placement
from .mode import eval_mode


def input_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[nn.Module, tuple[int, ...]]:
    """The per-example input shape each submodule sees in one eval-mode forward of a zero input."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module, args):  # returns None: the inputs pass on unchanged
        shapes.setdefault(module, tuple(args[0].shape[1:]))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()]
    where = placement(model)
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_shape, device=where.device, dtype=where.dtype))
    finally:
        for h in hooks:
            h.remove()
    return shapes
