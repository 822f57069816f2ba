"""Robustness curve (Marshall Alg. 2): accuracy under a fixed-step attack for ε₀ = 0 < ε₁ < …, stopping once
accuracy falls below chance. Each ε is attacked independently, so a rise in accuracy with ε is visible (and
flagged by the masking checks) instead of being hidden by reusing smaller-ε examples."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks import get_attack
from ..errors import EdgeRobustError
from .core import check_inputs, predict_labels
from .suite import robust_accuracy


def default_grid(norm: str = "linf") -> list[float]:
    if norm == "linf":
        return [round(0.025 * i, 4) for i in range(0, 21)]  # 0 … 0.5
    return [round(0.25 * i, 4) for i in range(0, 25)]  # 0 … 6 (L2, pixel units)


def robustness_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     eps_grid: list[float] | None = None, norm: str = "linf", attack: str = "pgd", steps: int = 100,
                     seed: int = 0, num_classes: int | None = None,
                     stop_below_chance: bool = True, batch_size: int = 256, progress: bool | None = None,
                     **attack_settings: Any) -> dict[str, Any]:
    """[(ε, accuracy)] for the grid (which must start at 0 and increase), up to the first ε below chance."""
    check_inputs(images, labels)
    grid = [float(e) for e in (eps_grid if eps_grid is not None else default_grid(norm))]
    if not grid or grid[0] != 0 or any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise EdgeRobustError("the robustness-curve ε grid must start at 0 and increase, e.g. 0,0.05,0.1")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    chance = 1.0 / num_classes
    points: list[list[float]] = []
    settings: dict[str, Any] = {}
    for eps in grid:
        if eps == 0:
            accuracy = (predict_labels(model, images, labels, batch_size) == labels.cpu()).float().mean().item()
        else:
            chosen = get_attack(attack, eps=eps, norm=norm, steps=steps, seed=seed, **attack_settings)
            settings = {k: v for k, v in chosen.describe().items() if k not in ("eps", "alpha")}
            accuracy = robust_accuracy(model, images, labels, chosen, batch_size, progress)
        points.append([eps, accuracy])
        if stop_below_chance and accuracy < chance:
            break
    return {"attack": attack, "norm": norm, "settings": settings, "points": points, "chance": chance,
            "reached_below_chance": points[-1][1] < chance, "note": "α = 2.5·ε/steps at each ε" if attack == "pgd"
            else ""}
