"""Compression: sparsity schemes and projections, ADMM, masks, one-shot L1 filter pruning, physical removal."""
from .admm import ADMMCallback
from .masks import MaskCallback, apply_masks
from .physical import remove_dead_channels
from .schemes import SCHEMES, STRUCTURED, PruningPlan, build_plan

__all__ = ["ADMMCallback", "MaskCallback", "PruningPlan", "SCHEMES", "STRUCTURED", "apply_masks", "build_plan",
           "remove_dead_channels"]
