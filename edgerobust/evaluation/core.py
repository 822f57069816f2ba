"""What every evaluation shares: checked predictions, and running one attack over a set of points in batches.

Data sets stay where the caller holds them (the CPU); each batch goes to the model's device (and dtype) and
per-point results (predictions, masks, adversarial examples) come back to the CPU, so a model on a GPU is
evaluated by the same code and its results compare with the CPU's directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import Attack, checked_logits, perturbation_norm
from ..compute_device import to_model
from ..errors import EdgeRobustError
from ..models.mode import eval_mode


def check_inputs(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.ndim != 4:
        raise EdgeRobustError(f"images must be a batch (N,C,H,W), got shape {tuple(images.shape)}")
    if labels.shape != (len(images),):
        raise EdgeRobustError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
    if len(images) == 0:
        raise EdgeRobustError("no images to evaluate; pass --n 1 or more")
    if images.min() < 0 or images.max() > 1:
        raise EdgeRobustError(f"images must be pixels in [0, 1], got values in [{images.min():.3g}, "
                              f"{images.max():.3g}]; attacks work in pixel space")


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted labels, checking that the model returns a batch of logits and the labels fit it."""
    with eval_mode(model):
        preds = [checked_logits(model, *to_model(model, images[i:i + batch_size], labels[i:i + batch_size]))
                 .argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(preds)


@dataclass
class AttackRun:
    """One attack applied to some points: which of them it broke, the examples, and what it cost."""

    adversarial: torch.Tensor  # (len(indices), C, H, W)
    broken: torch.Tensor  # bool, per attacked point
    seconds: float


def attack_points(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: Attack,
                  indices: torch.Tensor, batch_size: int = 256, on_batch=None) -> AttackRun:
    """Run `attack` on images[indices] in batches on the model's device; `broken` = misclassified afterwards
    (checked, in budget). Both come back on the CPU."""
    started = time.perf_counter()
    advs, broken = [], []
    indices = indices.to(images.device)
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        x, y = to_model(model, images[idx], labels[idx])
        x_adv = attack(model, x, y)
        check_budget(attack, x_adv, x)
        advs.append(x_adv.cpu())
        broken.append(predict_labels(model, x_adv, y, batch_size) != y.cpu())
        if on_batch:
            on_batch(len(idx))
    if not advs:
        return AttackRun(images[:0].cpu().clone(), torch.zeros(0, dtype=torch.bool), 0.0)
    return AttackRun(torch.cat(advs), torch.cat(broken), time.perf_counter() - started)


def check_budget(attack: Attack, x_adv: torch.Tensor, x: torch.Tensor) -> None:
    """Every reported adversarial point must lie in [0,1] and in the ε-ball: a violation is a bug, never a result."""
    if x_adv.shape != x.shape or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"attack {attack.name} returned points outside [0,1]")
    if attack.eps is not None:
        excess = perturbation_norm(x_adv, x, attack.norm).max().item() - attack.eps
        if excess > 1e-5 * max(attack.eps, 1.0):
            raise RuntimeError(f"attack {attack.name} left the {attack.norm} ε-ball by {excess:.3g}")
