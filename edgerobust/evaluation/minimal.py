"""Minimal-perturbation statistics (Peck Table 5.1 shape): min / max / mean / median / std of the smallest
perturbation a minimal attack finds, and its success rate. Following Peck, each point is attacked with its
predicted label, so a success is a change of the model's decision."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks import get_attack, perturbation_norm
from .core import attack_points, check_inputs, predict_labels


def summary(values: torch.Tensor) -> dict[str, float | None]:
    if len(values) == 0:
        return {"min": None, "max": None, "mean": None, "median": None, "std": None}
    v = values.double()
    return {"min": v.min().item(), "max": v.max().item(), "mean": v.mean().item(), "median": v.median().item(),
            "std": v.std().item() if len(v) > 1 else 0.0}


def minimal_perturbations(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str = "fgs-search",
                          batch_size: int = 256, **settings: Any) -> dict[str, Any]:
    check_inputs(images, labels)
    chosen = get_attack(attack, **settings)
    predicted = predict_labels(model, images, labels, batch_size)
    result = attack_points(model, images, predicted, chosen, torch.arange(len(images)), batch_size)
    found = result.broken
    out = {"attack": chosen.describe(), "n": len(images), "labels": "predicted (Peck)",
           "success_rate": found.float().mean().item(), "seconds": round(result.seconds, 3)}
    for norm in ("linf", "l2"):
        out[norm] = summary(perturbation_norm(result.adversarial[found], images.cpu()[found], norm))
    return out
