"""One-shot L1 filter pruning (Li et al. 2017; Barmpas): drop the filters whose kernels have the smallest L1 norm.

By ratio (keep the top fraction of each layer's filters) or by threshold (drop filters with L1 norm below it, as
Barmpas's conv1 < 2.5, conv2 < 25). Channels are the same dependency groups as the `filter` scheme, so the result
can be removed physically; optional fine-tuning is the masked retraining of api.compress_model.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import EdgeRobustError
from .schemes import PRUNABLE, PruningPlan, build_plan, keep_k, top_units


def filter_l1_norms(plan: PruningPlan, model: nn.Module) -> list[Tensor]:
    """Per target, each channel's kernel L1 norm (summed over the coupled Conv2d / Linear producer rows)."""
    modules = dict(model.named_modules())
    values = {name: p.detach() for name, p in model.named_parameters()}
    norms = []
    for target in plan.targets:
        first = values[next(s.param for s in target.slices if s.scored)]  # indices live on the CPU, with the plan
        device = first.device
        out = torch.zeros(target.units, device=device, dtype=first.dtype)
        for s in target.slices:
            module_name, _, pname = s.param.rpartition(".")
            if s.scored and pname == "weight" and isinstance(modules[module_name], PRUNABLE):
                rows = (values[s.param].movedim(s.dim, 0) if s.dim else values[s.param])[s.index.to(device)]
                out.index_add_(0, s.unit.to(device), rows.reshape(len(s.index), -1).abs().sum(1))
        norms.append(out)
    return norms


def l1_filter_masks(model: nn.Module, input_shape: Sequence[int], keep: float | None = None,
                    threshold: float | None = None, layers: Sequence[str] | None = None, round_to: int = 1,
                    layer_keep: dict[str, float] | None = None) -> tuple[PruningPlan, dict[str, Tensor]]:
    """Masks (True = kept) of a one-shot L1 filter pruning by keep ratio (per-layer overrides `layer_keep`, as
    build_plan) or by L1 threshold; kept filter counts rounded to multiples of `round_to` (schemes.keep_k; by ratio
    only)."""
    if (keep is None) == (threshold is None):
        raise EdgeRobustError("L1 filter pruning needs either a keep ratio or an L1 threshold (not both)")
    if threshold is not None and not threshold >= 0:
        raise EdgeRobustError(f"the L1 threshold must be non-negative, got {threshold}")
    if threshold is not None and round_to > 1:
        raise EdgeRobustError("round_to rounds a keep ratio's filter counts; an L1 threshold keeps what passes it "
                              "(use --keep, or --round-to 1)")
    plan = build_plan(model, input_shape, "filter", keep if keep is not None else 1.0, layers=layers,
                      round_to=round_to, layer_keep=layer_keep if threshold is None else None)
    values = dict(model.named_parameters())
    masks: dict[str, Tensor] = {}
    for target, ratio, norms in zip(plan.targets, plan.ratios, filter_l1_norms(plan, model), strict=True):
        if threshold is None:
            kept = top_units(norms, keep_k(target.units, ratio, round_to))
        else:
            kept = norms >= threshold
            if not kept.any():  # a layer keeps at least its strongest filter
                kept[torch.argmax(norms)] = True
        for param, mask in target.masks(kept, values, scored_only=False).items():
            masks[param] = masks[param] & mask if param in masks else mask
    return plan, masks
