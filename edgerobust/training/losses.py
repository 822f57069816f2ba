"""Training losses plug into the one loop: `loss(model, x, y, state) -> LossOutput`.

A loss is one class (or function returning one) in one file, registered with `@LOSSES.register`; the recipe's
`[train] loss` / `--loss` names it and `[train] loss_options` gives its own settings. It receives the shared
adversarial settings (ε, steps, schedule, …, see `ADVERSARIAL_SETTINGS`) that its constructor declares. A loss that
supplies its own targets sets `needs_labels = False` (then `y` may be None); one that holds modules (a teacher)
has a `to(device)` method, which the trainer calls. Adversarial, distillation, certified and smoothing methods all
register here without copying the loop.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EdgeRobustError
from ..registry import Registry


@dataclass
class StepState:
    epoch: int  # 0-based
    step: int  # global step
    progress: float  # fractional epoch, epoch + batch/batches
    epochs: int
    rows: tuple[int, int] | None = None  # under DDP: (first row, global batch size) of this rank's shard


@dataclass
class LossOutput:
    loss: torch.Tensor
    logits: torch.Tensor  # for accuracy of the inputs the loss saw (clean unless the loss says otherwise)
    metrics: dict[str, float] | None = None
    targets: torch.Tensor | None = None  # a loss that supplies its own targets (e.g. a teacher's): accuracy is on them


class TrainingLoss(Protocol):
    name: str  # set by the registry
    needs_labels: bool  # False: the loss supplies its own targets (optional attribute, default True)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, state: StepState) -> LossOutput: ...

    def describe(self) -> dict: ...  # recorded in the run manifest (training.loss)


LOSSES: Registry = Registry("loss")
# [adversarial] settings offered to every loss; it receives those its constructor declares (or all, with **options)
ADVERSARIAL_SETTINGS = ("eps", "steps", "alpha", "weight", "schedule", "epochs", "random_init", "seed", "stages",
                        "values", "start", "ramp", "min_steps")
ALIASES = {"pgd": "pgd-at", "fgsm": "fgsm-rs", "none": "natural", "": "natural"}  # [adversarial] method's short names


def needs_labels(loss: object) -> bool:
    return bool(getattr(loss, "needs_labels", True))


def declared_settings(builder: Any) -> tuple[list[str], bool]:
    """The settings a loss's constructor names, and whether it also takes any other (**options)."""
    params = list(inspect.signature(builder).parameters.values())
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def build_training_loss(name: str, **settings: Any) -> TrainingLoss:
    """The training loss registered as `name` (or an [adversarial] method's short name: pgd, fgsm, none).

    `settings` holds the loss's own options and the adversarial settings offered to it (`ADVERSARIAL_SETTINGS`):
    it receives the ones its constructor declares; an option of another name is an error naming those it takes.
    """
    builder = LOSSES.get(ALIASES.get(name, name))
    named, takes_any = declared_settings(builder)
    unknown = sorted(k for k in settings if k not in named and not takes_any and k not in ADVERSARIAL_SETTINGS)
    if unknown:
        raise EdgeRobustError(f"loss '{name}' has no setting {', '.join(unknown)}; its settings: "
                              f"{', '.join(named) or 'none'}")
    return builder(**{k: v for k, v in settings.items() if takes_any or k in named})


@LOSSES.register(help="cross-entropy on clean inputs")
class NaturalLoss:
    name = "natural"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, model, x, y, state):
        logits = model(x)
        return LossOutput(F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits)

    def describe(self) -> dict:
        return {"name": self.name, "label_smoothing": self.label_smoothing}
