"""Physical removal: dead channels leave the network, dependency-aware (BN, residual adds, depthwise convs).

A channel is dead when every producer slice of its torch-pruning group (conv / linear rows and biases, BN affine
parameters, depthwise filters) is exactly zero: its activation is then zero for every input (ReLU(0) = 0), so
removing it, with the consumers' matching input slices, leaves the outputs unchanged. torch-pruning does the
surgery; this module only decides which channels are dead.
"""
from __future__ import annotations

import copy
import re
import warnings
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


def remove_and_check(masked: nn.Module, input_shape: Sequence[int], probe: torch.Tensor, tolerance: float,
                     strict: bool = True) -> tuple[nn.Module, dict[str, int], float, dict]:
    """`remove_dead_channels`, then the slim and masked logits compared on `probe`. A zoo model (`strict`) that
    differs is a bug and raises; a user's graph that torch-pruning cannot follow (it fails, or the outputs change: a
    hard-coded reshape, a layer it does not know) keeps the masked network, and the report says why. Parameters of
    layers torch-pruning does not know (its "unwrapped parameters") are listed either way."""
    report: dict = {"removed": True}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            slim, removed = remove_dead_channels(masked, input_shape)
        except Exception as exc:  # torch-pruning on an arbitrary graph: report, keep the masked network
            if strict:
                raise
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            return masked, {}, 0.0, {"removed": False, "reason": f"torch-pruning failed: {reason}"}
    unwrapped = [str(w.message) for w in caught if "nwrapped parameters" in str(w.message)]
    if unwrapped:
        report["unknown_layers"] = sorted({name for text in unwrapped for name in re.findall(r"'([^']+)'", text)})
    max_diff = 0.0
    if removed:
        with torch.no_grad():
            max_diff = float((slim(probe) - masked(probe)).abs().max())
    if max_diff > tolerance:
        if strict:
            raise RuntimeError(f"physical removal changed the outputs by {max_diff:.3g}; this is a bug")
        return masked, {}, 0.0, {"removed": False, "reason": f"removing channels changed the outputs by "
                                                              f"{max_diff:.3g}: a layer torch-pruning cannot follow; "
                                                              "the masked network is kept",
                                 **{k: v for k, v in report.items() if k != "removed"}}
    return slim, removed, max_diff, report
