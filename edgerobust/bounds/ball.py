"""Input sets: an L∞ or L2 ball around each point, intersected with the [0, 1] pixel box.

The L∞ ball ∩ box is a box, so concretising a linear bound over it is exact. The L2 ball ∩ box is bounded two ways
and the larger lower bound kept (both sets contain it): over the enclosing box, and over the ball,
min over ‖δ‖₂ <= ε of A·(x + δ) = A·x - ε‖A‖₂ (Cauchy-Schwarz).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import EdgeRobustError
from .rules.base import SLACK

NORMS = ("inf", "2")


@dataclass
class Ball:
    """Points x [B, *shape] in [0, 1], radius eps (a number or one per point), norm 'inf' or '2'."""

    x: torch.Tensor
    eps: torch.Tensor | float
    norm: str = "inf"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise EdgeRobustError(f"unknown norm '{self.norm}'; choose one of {', '.join(NORMS)}")
        eps = torch.as_tensor(self.eps, dtype=self.x.dtype, device=self.x.device)
        if bool((eps < 0).any()) or bool((eps > 1).any()) or not bool(torch.isfinite(eps).all()):
            raise EdgeRobustError(f"eps must lie in [0, 1] (pixel scale); got {eps.flatten().tolist()[:4]}")
        self.radius = eps.reshape(-1, *([1] * (self.x.dim() - 1))) if eps.dim() else eps

    def select(self, index: torch.Tensor) -> Ball:
        """The balls of the points `index` (repeats allowed), in that order."""
        eps = self.radius.reshape(-1)[index] if self.radius.dim() else self.radius
        return Ball(self.x[index], eps, self.norm)

    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.x - self.radius).clamp(0, 1), (self.x + self.radius).clamp(0, 1)

    def lower(self, A: torch.Tensor, bias: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """min over the set of A·x + bias, [S, B], widened by the engine's own rounding (SLACK)."""
        S, B = A.shape[:2]
        lo, hi = self.box()
        flat = A.reshape(S, B, -1)
        mid, rad = ((lo + hi) / 2).reshape(1, B, -1), ((hi - lo) / 2).reshape(1, B, -1)
        size = (flat.abs() * torch.maximum(lo.abs(), hi.abs()).reshape(1, B, -1)).sum(-1) + magnitude
        bound = (flat * mid).sum(-1) - (flat.abs() * rad).sum(-1)
        if self.norm == "2":
            eps = self.radius.reshape(-1) if torch.is_tensor(self.radius) and self.radius.dim() else self.radius
            dual = eps * flat.norm(dim=-1)
            bound = torch.maximum(bound, (flat * self.x.reshape(1, B, -1)).sum(-1) - dual)
            size = size + dual
        return bound + bias - SLACK * size
