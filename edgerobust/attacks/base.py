"""What every attack shares: the registry, settings records, input checks and ε-ball projection.

An attack is a callable `attack(model, x, y) -> x_adv` built by `get_attack(name, **settings)`; it works in
pixel space [0,1], on a batch, with the model in eval mode, and never leaves the ε-ball or [0,1].
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import EdgeRobustError
from ..models.mode import eval_mode
from ..registry import Registry

NORMS = ("linf", "l2")
ATTACKS: Registry[Callable[..., Attack]] = Registry("attack")


class Attack:
    """Base class: subclasses implement `perturb`; `__call__` checks input and restores the model's mode.

    A budgeted attack (`minimal = False`) searches the ε-ball; a minimal-perturbation attack (CW, DeepFool, FGS
    search) looks for the smallest perturbation and, when given ε, keeps only the examples it found within ε.
    """

    name = "attack"  # set by the registry from the class (see registry.own_name)
    minimal = False
    norms: tuple[str, ...] = NORMS  # the norms it accepts; tests and help read it

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
        if self.eps == 0:
            return x.detach().clone()
        with eval_mode(model):
            x_adv = self.perturb(model, x.detach(), y)
        return project(x_adv.detach(), x.detach(), self.eps, self.norm)


def checked_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model's logits for x, failing with one line if they are not a (batch, classes) tensor fitting y."""
    logits = model(x)
    check_logits(logits, y)
    return logits


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)


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
    """A point of the ε-ball around x (in `norm`) intersected with [0,1], for x in [0,1].

    L∞: clip δ to [−ε, ε], then the point to [0,1]; both sets are boxes, so this is the (Euclidean) nearest point of
    their intersection. L2: scale δ into the ball, then clip the point to [0,1]; clipping only moves coordinates
    towards x, so the result is feasible (in the ball and in [0,1]), but it is not in general the nearest point of
    the intersection (that needs a search over the clipped coordinates; attacks only need a feasible point here).
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        delta = delta * (eps / norms).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def batch_rows(x: torch.Tensor, rows: tuple[int, int] | None, draw) -> torch.Tensor:
    """`draw(shape)` for x's batch, on x's device. With `rows` = (first, total), x holds rows first.. of a batch of
    `total`: the whole batch is drawn and x's rows kept, so a batch split across processes (DDP) gets the numbers
    the whole batch would get in one process."""
    if rows is None:
        return draw(x.shape).to(x.device)
    first, total = rows
    return draw((total, *x.shape[1:]))[first:first + len(x)].to(x.device)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None,
                 rows: tuple[int, int] | None = None) -> torch.Tensor:
    """A uniformly random point of the ε-ball around x (then clipped to [0,1]); `rows` as in `batch_rows`."""
    if norm == "linf":
        noise = batch_rows(x, rows, lambda shape: (torch.rand(shape, generator=generator) * 2 - 1) * eps)
    else:
        def draw(shape):
            direction = unit_direction(shape, "l2", generator)
            radius = torch.rand(shape[0], generator=generator).pow(1.0 / math.prod(shape[1:]))
            return direction * radius.view(-1, *([1] * (len(shape) - 1))) * eps

        noise = batch_rows(x, rows, draw)
    return project(x + noise, x, eps, norm)


def unit_direction(shape: Sequence[int], norm: str, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """A random direction per example (first dimension) of unit `norm` on `device` (default: the CPU); L∞: uniform
    in the cube, scaled to max 1; L2: Gaussian, normalised. Drawn with the CPU `generator`, then moved (see
    `cpu_draw`)."""
    per_example = (-1, *([1] * (len(shape) - 1)))
    if norm == "linf":
        t = cpu_draw(torch.rand, shape, generator=generator, device=device) * 2 - 1
        return t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(per_example)
    t = cpu_draw(torch.randn, shape, generator=generator, device=device)
    return t / t.flatten(1).norm(dim=1).clamp_min(1e-12).view(per_example)


def cpu_draw(sample: Callable[..., torch.Tensor], *args: Any, generator: torch.Generator | None = None,
             device: torch.device | str | None = None, **kwargs: Any) -> torch.Tensor:
    """`sample(*args)` (torch.rand, randn, randint, ...) drawn on the CPU with the attack's seeded `generator`, then
    moved to `device`: the rule for every random draw of an attack, so a CUDA run draws the numbers of the CPU run
    with the same seed (CUDA generators give other streams)."""
    return sample(*args, generator=generator, **kwargs).to(device if device is not None else "cpu")


def steepest_step(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    """The step of size α that increases the loss fastest to first order in `norm`."""
    if norm == "linf":
        return alpha * grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
    return alpha * grad / norms


def get_attack(name: str, **settings: Any) -> Attack:
    return ATTACKS.get(name)(**settings)


class MinimalAttack(Attack):
    """An attack that searches for the smallest perturbation; `eps=None` means unbounded (only [0,1] applies)."""

    minimal = True

    def __init__(self, eps: float | None = None, norm: str = "l2", **settings: Any):
        if norm not in NORMS:
            raise EdgeRobustError(f"unknown norm '{norm}'; valid norms: {', '.join(NORMS)}")
        if eps is not None:
            check_eps(eps, norm)
        self.eps = None if eps is None else float(eps)
        self.norm = norm
        self.settings = settings

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_batch(model, x, y)
        x = x.detach()
        if self.eps == 0:
            return x.clone()
        with eval_mode(model):
            x_adv = self.perturb(model, x, y).detach().clamp(0.0, 1.0)
        if self.eps is not None:
            # outside the budget the attack failed: keep the clean input rather than a projected (weaker) point
            too_far = perturbation_norm(x_adv, x, self.norm) > self.eps * (1 + 1e-6)
            x_adv[too_far] = x[too_far]
        return x_adv
