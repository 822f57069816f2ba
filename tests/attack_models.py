"""Small models whose attacks have known answers, shared by the attack tests."""
from __future__ import annotations

import torch
from torch import nn


def linear_model(classes: int = 10, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """A linear classifier of 1×6×6 inputs (its boundaries are hyperplanes with exact distances)."""
    torch.manual_seed(seed)
    layer = nn.Linear(36, classes)
    with torch.no_grad():
        layer.weight.mul_(scale)
    return nn.Sequential(nn.Flatten(), layer).eval()


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10)).eval()


def cheap_attack(name: str, eps: float | None, norm: str, **extra):
    """`get_attack(name)` with few steps and queries, so tests over every attack stay fast."""
    from edgerobust.attacks import get_attack

    kwargs = {"eps": eps, "norm": norm}
    if name in ("pgd", "bim", "mim", "apgd-ce", "apgd-dlr", "apgd-t"):
        kwargs["steps"] = 5
    if name == "square":
        kwargs["queries"] = 20
    if name == "cw":
        kwargs.update(steps=10, search_steps=2)
    if name in ("fab", "fab-t"):
        kwargs.update(steps=3, search_steps=3)
    return get_attack(name, **{**kwargs, **extra})
