"""Small models whose attacks have known answers, shared by the attack tests."""
from __future__ import annotations

import inspect

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


CHEAP = {"steps": 5, "queries": 20, "search_steps": 2}  # for any attack that takes these settings
CHEAPER = {"cw": {"steps": 10}, "fab": {"steps": 3, "search_steps": 3}, "fab-t": {"steps": 3, "search_steps": 3}}


def settings_of(name: str) -> set[str]:
    """The settings an attack's builder takes (its constructor's parameters)."""
    from edgerobust.attacks import ATTACKS

    return set(inspect.signature(ATTACKS.get(name)).parameters)


def default_norm(name: str) -> str:
    from edgerobust.attacks import ATTACKS

    return ATTACKS.get(name).norms[0]


def cheap_attack(name: str, eps: float | None, norm: str, **extra):
    """`get_attack(name)` with few steps and queries, so tests over every attack stay fast."""
    from edgerobust.attacks import get_attack

    kwargs = {"eps": eps, "norm": norm, **{k: v for k, v in CHEAP.items() if k in settings_of(name)},
              **CHEAPER.get(name, {})}
    return get_attack(name, **{**kwargs, **extra})
