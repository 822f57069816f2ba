"""The catastrophic-overfitting guard of fast adversarial training (Wong et al. 2020).

After every epoch it attacks one fixed training batch with PGD; if that robust accuracy collapses (falls more than
`max_drop` below the best epoch so far, or below `floor`) it puts back the previous epoch's weights and stops the
run, saying why in trainer.stop_reason. FGSM-trained models can lose all PGD robustness within one epoch while
their FGSM accuracy soars; nothing else in the loop would notice.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from ..attacks import get_attack
from ..compute_device import to_model
from ..errors import EdgeRobustError
from ..models.mode import eval_mode
from .loop import Callback, Trainer


class CatastrophicOverfittingGuard(Callback):
    def __init__(self, eps: float, steps: int = 5, batch_size: int = 256, max_drop: float = 0.2,
                 floor: float = 0.0, seed: int = 0):
        if not 0 < max_drop <= 1:
            raise EdgeRobustError(f"the overfitting guard's max_drop must be in (0, 1], got {max_drop}")
        if not 0 <= floor < 1:
            raise EdgeRobustError(f"the overfitting guard's floor must be in [0, 1), got {floor}")
        self.attack = get_attack("pgd", eps=eps, steps=steps, random_init=True, early_exit=False, seed=seed)
        self.batch_size, self.max_drop, self.floor, self.seed = int(batch_size), float(max_drop), float(floor), seed
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.previous: dict[str, torch.Tensor] | None = None
        self.fired: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {"attack": self.attack.describe(), "batch_size": self.batch_size, "max_drop": self.max_drop,
                "floor": self.floor}

    def batch(self, trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        data = trainer.train_data
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))[:self.batch_size]
        return data.images[order], data.labels[order]

    def robust_accuracy(self, trainer: Trainer) -> float:
        x, y = to_model(trainer.model, *self.batch(trainer))  # the fixed batch, on the model's device
        x_adv = self.attack(trainer.model, x, y)
        with torch.no_grad(), eval_mode(trainer.model):
            correct = (trainer.model(x_adv).argmax(1) == y).float().mean().item()
        return correct

    def on_train_start(self, trainer: Trainer) -> None:
        # on resume the model holds the last completed epoch's weights: exactly what a collapse must restore
        self.previous = copy.deepcopy(trainer.model.state_dict())

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        accuracy = self.robust_accuracy(trainer)
        metrics["guard_pgd_accuracy"] = accuracy
        collapsed = self.best is not None and (accuracy < self.best - self.max_drop or accuracy < self.floor)
        if not collapsed:
            if self.best is None or accuracy > self.best:
                self.best, self.best_epoch = accuracy, epoch + 1
            self.previous = copy.deepcopy(trainer.model.state_dict())
            return
        trainer.model.load_state_dict(self.previous)
        self.fired = {"epoch": epoch + 1, "accuracy": accuracy, "best": self.best, "best_epoch": self.best_epoch,
                      "restored_epoch": epoch}
        metrics["guard_restored_epoch"] = epoch
        trainer.stop_reason = (f"catastrophic overfitting in epoch {epoch + 1}: PGD-{self.attack.steps} accuracy on "
                               f"a training batch fell to {accuracy:.3f} (best {self.best:.3f} in epoch "
                               f"{self.best_epoch}); restored the weights of epoch {epoch} and stopped")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "fired": self.fired}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.fired = state.get("best"), state.get("best_epoch"), state.get("fired")
