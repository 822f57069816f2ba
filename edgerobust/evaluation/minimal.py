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


def minimal_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str = "fgs-search",
                  batch_size: int = 256, **settings: Any) -> dict[str, Any]:
    """Per point the norms (L∞ and L2, NaN where the attack failed) of the perturbation a minimal attack finds
    against the model's predicted label; `broken` flags the points it flipped (the flip checked on the model)."""
    check_inputs(images, labels)
    chosen = get_attack(attack, **settings)
    predicted = predict_labels(model, images, labels, batch_size)
    result = attack_points(model, images, predicted, chosen, torch.arange(len(images)), batch_size)
    found = result.broken
    out: dict[str, Any] = {"attack": chosen.describe(), "broken": found, "seconds": result.seconds}
    for norm in ("linf", "l2"):
        values = perturbation_norm(result.adversarial.double(), images.cpu().double(), norm)
        out[norm] = torch.where(found, values, torch.full_like(values, float("nan")))
    return out


def minimal_perturbations(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str = "fgs-search",
                          batch_size: int = 256, **settings: Any) -> dict[str, Any]:
    per_point = minimal_norms(model, images, labels, attack, batch_size, **settings)
    found = per_point["broken"]
    out = {"attack": per_point["attack"], "n": len(images), "labels": "predicted (Peck)",
           "success_rate": found.float().mean().item(), "seconds": round(per_point["seconds"], 3)}
    for norm in ("linf", "l2"):
        out[norm] = summary(per_point[norm][found])
    return out
