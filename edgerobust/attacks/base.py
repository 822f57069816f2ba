"""What every attack shares: the registry, settings records, input checks and ε-ball projection.

An attack is a callable `attack(model, x, y) -> x_adv` built by `get_attack(name, **settings)`; it works in
pixel space [0,1], on a batch, with the model in eval mode, and never leaves the ε-ball or [0,1].
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import EdgeRobustError
from ..registry import Registry

NORMS = ("linf", "l2")
ATTACKS: Registry[Callable[..., "Attack"]] = Registry("attack")


class Attack:
    """Base class: subclasses implement `perturb`; `__call__` checks input and restores the model's mode."""

    name = "attack"

    def __init__(self, eps: float, norm: str = "linf", **settings: Any):
        check_eps(eps, norm)
        self.eps = float(eps)
        self.norm = norm
        self.settings = settings

    def describe(self) -> dict[str, Any]:
        return {"attack": self.name, "eps": self.eps, "norm": self.norm, **self.settings}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_batch(model, x, y)
        was_training = model.training
        model.eval()
        try:
            if self.eps == 0:
                return x.detach().clone()
            x_adv = self.perturb(model, x.detach(), y)
        finally:
            model.train(was_training)
        return project(x_adv.detach(), x.detach(), self.eps, self.norm)


def check_eps(eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise EdgeRobustError(f"unknown norm '{norm}'; valid norms: {', '.join(NORMS)}")
    if norm == "linf" and not 0 <= eps <= 1:
        raise EdgeRobustError(f"ε = {eps} is outside [0, 1]; pixels are in [0, 1] (8/255 ≈ 0.031)")
    if norm == "l2" and not eps >= 0:
        raise EdgeRobustError(f"ε = {eps} must be non-negative")


def check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4:
        raise EdgeRobustError(f"attack inputs must be a batch of images (N,C,H,W), got shape {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise EdgeRobustError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")


def check_logits(logits: torch.Tensor, y: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
        raise EdgeRobustError(f"the model's output has shape {tuple(logits.shape)}; attacks need a batch of logits "
                              f"({y.shape[0]}, classes)")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
        raise EdgeRobustError(f"labels must be in [0, {logits.shape[1] - 1}] for a {logits.shape[1]}-class model, "
                              f"got {int(y.min())}..{int(y.max())}")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Nearest point of the ε-ball around x (in `norm`) intersected with [0,1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        delta = delta * (eps / norms).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> torch.Tensor:
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    else:
        noise = torch.randn(x.shape, generator=generator)
        noise = noise / noise.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1))).clamp_min(1e-12)
        radius = torch.rand(x.shape[0], generator=generator).pow(1.0 / x[0].numel()).view(-1, *([1] * (x.ndim - 1)))
        noise = noise * radius * eps
    return project(x + noise, x, eps, norm)


def steepest_step(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    """The step of size α that increases the loss fastest to first order in `norm`."""
    if norm == "linf":
        return alpha * grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
    return alpha * grad / norms


def get_attack(name: str, **settings: Any) -> Attack:
    return ATTACKS.get(name)(**settings)
