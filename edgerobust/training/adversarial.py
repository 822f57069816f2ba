"""Adversarial training losses for the one loop: PGD-AT (Madry, mixed with clean CE), fast FGSM-RS, TRADES.

Each loss is a pure function of (model, batch, StepState): ε and attack steps come from an EpsSchedule and the
attack's random start is seeded from the global step, so a resumed run repeats the uninterrupted one exactly.
Attacks run on the unwrapped model in eval mode (the Attack base class's convention); under DDP the wrapper
is kept for the training forwards only, because an input-gradient pass through it would confuse its reducer.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import get_attack, project, steepest_step
from ..attacks.base import batch_rows
from ..errors import EdgeRobustError
from ..models.mode import eval_mode
from .distributed import unwrap
from .eps_schedule import EpsSchedule
from .losses import LOSSES, LossOutput, StepState, build_training_loss  # noqa: F401  (re-exported)

_SEED_STRIDE = 1_000_003  # keeps seeds of different runs' steps apart


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item() if len(y) else 0.0


class AdversarialLoss:
    """Shared settings: the ε/steps schedule, step size, loss weight and the seed of the random starts."""

    default_weight = 1.0
    guard_by_default = False  # the catastrophic-overfitting guard's default ([adversarial] guard)

    def __init__(self, eps: float | EpsSchedule = 8 / 255, steps: int = 10, alpha: float | None = None,
                 weight: float | None = None, schedule: str | EpsSchedule = "constant", *, epochs: int = 1,
                 min_steps: int | None = None, random_init: bool = True, seed: int = 0, **schedule_options: Any):
        if isinstance(schedule, EpsSchedule):
            self.schedule = schedule
        elif isinstance(eps, EpsSchedule):
            self.schedule = eps
        else:
            self.schedule = EpsSchedule(float(eps), schedule, epochs=epochs, steps=steps, min_steps=min_steps,
                                        **schedule_options)
        self.weight = self.default_weight if weight is None else float(weight)
        self.alpha = None if alpha is None else float(alpha)
        if self.alpha is not None and not self.alpha > 0:
            raise EdgeRobustError(f"attack step size α must be positive, got {self.alpha}")
        self.random_init = bool(random_init)
        self.seed = int(seed)
        self.check_weight()

    def check_weight(self) -> None:
        if not 0 <= self.weight <= 1:
            raise EdgeRobustError(f"{self.name}: the adversarial weight w must be in [0, 1], got {self.weight}")

    def settings_at(self, state: StepState) -> tuple[float, int]:
        return self.schedule.eps_at(state.progress), self.schedule.steps_at(state.epoch)

    def step_seed(self, state: StepState) -> int:
        return self.seed * _SEED_STRIDE + state.step

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "alpha": self.alpha, "random_init": self.random_init,
                "seed": self.seed, "schedule": self.schedule.describe()}

    def mixed(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float,
              steps: int) -> LossOutput:
        """w·CE(x_adv) + (1−w)·CE(x). Logits are the clean ones when the clean term is computed; at w = 1 no
        clean forward is spent (it would cost a third of FGSM-RS's step), so train_accuracy is adversarial."""
        if 0 < self.weight < 1 and not _has_batchnorm(unwrap(model)):
            # one forward over both halves: the same per-example maths, one pass of per-layer overhead fewer
            adv_logits, logits = model(torch.cat([x_adv, x])).split(len(x))
        else:  # batch norm would mix the two halves' statistics, so they go through separately
            adv_logits = model(x_adv)
            logits = model(x) if self.weight < 1 else adv_logits
        adv_loss = F.cross_entropy(adv_logits, y)
        if self.weight < 1:
            loss = self.weight * adv_loss + (1 - self.weight) * F.cross_entropy(logits, y)
        else:
            logits, loss = adv_logits, adv_loss
        return LossOutput(loss, logits, {"train_adv_accuracy": _accuracy(adv_logits, y),
                                         "train_adv_loss": adv_loss.item(), "eps": eps, "steps": float(steps)})


@LOSSES.register(help="PGD adversarial training (Madry), w·CE(x_adv) + (1−w)·CE(x), default w = 0.9")
class PGDAdversarialLoss(AdversarialLoss):
    name = "pgd-at"
    default_weight = 0.9  # Marshall's "generalised best"

    def __call__(self, model, x, y, state):
        eps, steps = self.settings_at(state)
        alpha = self.alpha if self.alpha is not None else 2.5 * eps / steps
        attack = get_attack("pgd", eps=eps, steps=steps, alpha=alpha, random_init=self.random_init,
                            early_exit=False, seed=self.step_seed(state), rows=state.rows)
        return self.mixed(model, x, attack(unwrap(model), x, y), y, eps, steps)


@LOSSES.register(help="fast adversarial training: FGSM from a random start, α = 1.25ε (Wong et al. 2020)")
class FGSMRSLoss(AdversarialLoss):
    name = "fgsm-rs"
    default_weight = 1.0  # Wong et al. train on the adversarial loss alone
    guard_by_default = True  # the fast method is the one that overfits catastrophically (Wong et al.)

    def __init__(self, eps=8 / 255, steps: int = 1, alpha=None, weight=None, schedule="constant", **options):
        super().__init__(eps, 1, alpha, weight, schedule, **options)

    def __call__(self, model, x, y, state):
        eps = self.schedule.eps_at(state.progress)
        if self.random_init:
            alpha = self.alpha if self.alpha is not None else 1.25 * eps
            attack = get_attack("fgsm-rs", eps=eps, alpha=alpha, seed=self.step_seed(state), rows=state.rows)
        else:  # random_init = false is honoured: plain FGSM from x (Goodfellow et al. 2015), step ε unless α is set
            attack = get_attack("pgd", eps=eps, steps=1, alpha=self.alpha if self.alpha is not None else eps,
                                random_init=False, early_exit=False)
        return self.mixed(model, x, attack(unwrap(model), x, y), y, eps, 1)

    def describe(self) -> dict[str, Any]:
        default = "1.25·eps" if self.random_init else "eps (plain FGSM: no random start)"
        return {**super().describe(), "alpha": self.alpha if self.alpha is not None else default}


@LOSSES.register(help="TRADES (Zhang et al. 2019): CE(x) + β·KL(f(x) ‖ f(x_adv)), default β = 6")
class TradesLoss(AdversarialLoss):
    """`weight` is TRADES's β; the inner maximisation is PGD on the KL term from x + 0.001·N(0, 1)."""

    name = "trades"
    default_weight = 6.0

    def check_weight(self) -> None:
        if not self.weight >= 0:
            raise EdgeRobustError(f"trades: β (the adversarial weight) must be non-negative, got {self.weight}")

    def __call__(self, model, x, y, state):
        eps, steps = self.settings_at(state)
        alpha = self.alpha if self.alpha is not None else 2.5 * eps / steps
        x_adv = self.perturb(unwrap(model), x, eps, steps, alpha, self.step_seed(state), state.rows)
        logits = model(x)
        adv_logits = model(x_adv)
        natural = F.cross_entropy(logits, y)
        robust = F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(logits, 1), reduction="batchmean")
        return LossOutput(natural + self.weight * robust, logits,
                          {"train_adv_accuracy": _accuracy(adv_logits, y), "train_kl": robust.item(),
                           "eps": eps, "steps": float(steps)})

    def perturb(self, model: nn.Module, x: torch.Tensor, eps: float, steps: int, alpha: float,
                seed: int, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """PGD maximising KL(f(x) ‖ f(x')) in the L∞ ε-ball, with the model in eval mode."""
        if eps == 0:
            return x.detach()
        with eval_mode(model):
            x = x.detach()
            with torch.no_grad():
                target = F.softmax(model(x), 1)
            generator = torch.Generator().manual_seed(seed)
            noise = batch_rows(x, rows, lambda shape: torch.randn(shape, generator=generator) * 0.001)
            x_adv = project(x + noise, x, eps, "linf") if self.random_init else x.clone()
            for _ in range(steps):
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv), 1), target, reduction="sum")
                (grad,) = torch.autograd.grad(kl, x_adv)
                x_adv = project(x_adv.detach() + steepest_step(grad, alpha, "linf"), x, eps, "linf")
        return x_adv.detach()
