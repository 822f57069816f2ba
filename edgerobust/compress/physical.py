"""Physical removal: dead channels leave the network, dependency-aware (BN, residual adds, depthwise convs).

A channel is dead when every producer slice of its torch-pruning group (conv / linear rows and biases, BN affine
parameters, depthwise filters) is exactly zero: its activation is then zero for every input (ReLU(0) = 0), so
removing it, with the consumers' matching input slices, leaves the outputs unchanged. torch-pruning does the
surgery; this module only decides which channels are dead.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..compute_device import placement
from .schemes import dependency_groups, group_slices


def dead_channels(model: nn.Module, input_shape: Sequence[int]):
    """(graph, [(group root module, root pruning fn, dead root indices, root layer name)]) of `model`."""
    names = {m: n for n, m in model.named_modules()}
    where = placement(model)  # torch-pruning traces the model: its example input on the model's device
    graph, groups = dependency_groups(model, torch.zeros(1, *input_shape, device=where.device, dtype=where.dtype))
    values = {name: p.detach() for name, p in model.named_parameters()}
    plans = []
    for group in groups:
        slices, _, units = group_slices(group, graph, names, score_producers=True)
        alive = torch.zeros(units, dtype=torch.bool, device=where.device)
        for s in slices.values():
            if s.scored:
                rows = (values[s.param].movedim(s.dim, 0) if s.dim else values[s.param])[s.index.to(where.device)]
                alive.scatter_reduce_(0, s.unit.to(where.device), rows.reshape(len(s.index), -1).ne(0).any(1),
                                      "amax")
        dead = (~alive).nonzero().flatten().tolist()
        if len(dead) == units:
            dead = dead[1:]  # a layer needs one channel; the kept dead one still outputs exactly zero
        if dead:
            root = group[0].dep
            plans.append((root.target.module, root.handler, dead, names.get(root.target.module, "?")))
    return graph, plans


def remove_dead_channels(model: nn.Module, input_shape: Sequence[int]) -> tuple[nn.Module, dict[str, int]]:
    """A slim copy of `model` without its dead channels, and how many channels each group root lost."""
    slim = copy.deepcopy(model).eval()
    graph, plans = dead_channels(slim, input_shape)
    removed = {}
    for module, handler, dead, name in plans:
        graph.get_pruning_group(module, handler, dead).prune()
        removed[name] = len(dead)
    return slim, removed
