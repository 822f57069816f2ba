"""Training losses plug into the one loop: `loss(model, x, y, state) -> LossOutput`.

Later methods (adversarial, distillation, certified, smoothing) register here without copying the loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

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
    name: str

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: StepState) -> LossOutput: ...

    def describe(self) -> dict: ...


LOSSES: Registry = Registry("loss")


@LOSSES.register("natural", "cross-entropy on clean inputs")
class NaturalLoss:
    name = "natural"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, model, x, y, state):
        logits = model(x)
        return LossOutput(F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits)

    def describe(self) -> dict:
        return {"name": self.name, "label_smoothing": self.label_smoothing}
