"""Rebuild a physically pruned network from its state dict: layers take the shapes their weights have."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

KNOWN = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)


def resize_to_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Replace Conv2d / Linear / BatchNorm layers whose saved weights have other shapes, in place; then any other
    parameter or buffer of another saved shape but the same rank (a user layer's own, e.g. a per-channel gain) takes
    that shape."""
    for name, module in list(model.named_modules()):
        key = f"{name}.weight" if name else "weight"
        if key not in state or not hasattr(module, "weight") or module.weight is None:
            continue
        shape = tuple(state[key].shape)
        if tuple(module.weight.shape) == shape:
            continue
        replacement = _resized(module, shape)
        if replacement is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, replacement)
    for name, module in model.named_modules():
        if isinstance(module, KNOWN):
            continue  # rebuilt above; a saved tensor that still does not fit is the checkpoint's fault
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                saved = state.get(f"{name}.{key}" if name else key)
                if tensor is not None and saved is not None and saved.shape != tensor.shape \
                        and saved.ndim == tensor.ndim:
                    fresh = torch.empty(saved.shape, dtype=tensor.dtype, device=tensor.device)
                    table[key] = nn.Parameter(fresh, tensor.requires_grad) if isinstance(tensor, nn.Parameter) \
                        else fresh
    return model


def _resized(module: nn.Module, shape: tuple[int, ...]) -> nn.Module | None:
    if isinstance(module, nn.Conv2d):
        out_ch, in_per_group = shape[0], shape[1]
        depthwise = module.groups == module.in_channels and module.groups > 1
        groups = out_ch if depthwise else module.groups
        return nn.Conv2d(in_per_group * groups, out_ch, module.kernel_size, module.stride, module.padding,
                         module.dilation, groups, module.bias is not None, module.padding_mode)
    if isinstance(module, nn.Linear):
        return nn.Linear(shape[1], shape[0], bias=module.bias is not None)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
    if isinstance(module, nn.BatchNorm1d):
        return nn.BatchNorm1d(shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
    return None
