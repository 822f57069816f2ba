"""Distillation losses for the one loop: a student learns from a fixed teacher (Barmpas, ch. 4).

- `logit-matching` (Ba & Caruana; Barmpas eq. 4.1): mean (z_teacher − z_student)².
- `temperature` (Barmpas eq. 4.3): the student at T = 1 on soft targets softmax(z_teacher / T), no hard labels and
  no T² factor. The loss reported is KL(p_T ‖ softmax(z_student)): the thesis's cross-entropy minus the targets'
  entropy, the same gradient, and zero for a student that already matches.
- `hinton` (Hinton et al. 2015): α·T²·KL(p_T ‖ softmax(z_student / T)) + (1 − α)·CE(z_student, y).
- `ard` (Goldblum et al. 2020; Barmpas eq. 4.5): α·T²·KL(softmax(z_teacher(x)/T) ‖ softmax(z_student(x+δ)/T)) +
  (1 − α)·CE(z_student(x), y), δ from PGD on the *student* each batch, matching the teacher's *clean* outputs.
  The attack maximises CE against the labels when the hard term is on (α < 1), else against the teacher's
  predictions, so α = 1 (the default, Barmpas's form) needs no labels.
- `rslad` (Zi et al. 2021): 5/6·KL(teacher ‖ student(x')) + 1/6·KL(teacher ‖ student(x)), x' from PGD maximising the
  first KL (start x + 0.001·N(0,1)); the KL is reduced as the authors' code does, a mean over examples *and*
  classes (their README's "pytorch default" note), i.e. the per-example KL divided by the class count.

Every loss is label-free unless it says `needs_labels`, returns the teacher's predicted classes as its `targets`
(train accuracy becomes agreement with the teacher), and keeps the teacher in eval mode without gradients: it is
never trained. The temperature is called `temperature` everywhere (recipe key, CLI option, manifest); the papers' α
is `soft_weight` everywhere ([distill] soft_weight, --soft-weight, the manifest), because a recipe's [adversarial]
alpha (an attack's step size) is offered to every loss too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import get_attack, project, steepest_step
from ..attacks.base import batch_rows
from ..compute_device import placement
from ..errors import EdgeRobustError
from ..run import RunDir
from .distributed import unwrap
from .losses import LOSSES, LossOutput, StepState

_SEED_STRIDE = 1_000_003


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(z / T): one-hot on the argmax as T → 0, uniform as T → ∞."""
    return F.softmax(logits / temperature, dim=1)


def kl_to(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-example KL(target ‖ softmax(logits)), summed over classes (0·log 0 = 0)."""
    return (torch.xlogy(target, target) - target * F.log_softmax(logits, dim=1)).sum(1)


def check_temperature(value: float) -> float:
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise EdgeRobustError(f"temperature = {value}: the distillation temperature must be a positive number, "
                              "e.g. --temperature 2")
    return value


class DistillationLoss:
    """A loss against a fixed teacher (an nn.Module kept in eval mode, without gradients, on the batch's device)."""

    name = "distillation"
    needs_labels = False

    def __init__(self, teacher: nn.Module | str, temperature: float = 1.0):
        if isinstance(teacher, (str, Path)):  # by name from a recipe or the CLI: a run directory
            teacher = RunDir.open(teacher).load_model()
        if not isinstance(teacher, nn.Module):
            raise EdgeRobustError(f"{self.name}: the teacher must be a model or a run directory, got "
                                  f"{type(teacher).__name__}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = check_temperature(1.0 if temperature is None else temperature)

    def to(self, device) -> DistillationLoss:
        """The trainer places the loss's modules with the model: the teacher computes on the training device."""
        self.teacher.to(device)
        return self

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        where = placement(self.teacher)
        if where.device != x.device:  # placed with the student: the trainer's device, CUDA included
            self.teacher.to(x.device)
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher(x.to(where.dtype) if where.dtype != x.dtype else x).to(x.dtype)

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "needs_labels": self.needs_labels, **self.settings()}

    def output(self, loss, logits, teacher, metrics=None) -> LossOutput:
        return LossOutput(loss, logits, metrics, targets=teacher.argmax(1))


@LOSSES.register(help="distillation: MSE between student and teacher logits (Ba & Caruana)")
class LogitMatchingLoss(DistillationLoss):
    name = "logit-matching"

    def __call__(self, model, x, y, state):
        teacher = self.teacher_logits(x)
        logits = model(x)
        return self.output(F.mse_loss(logits, teacher), logits, teacher)

    def settings(self) -> dict[str, Any]:
        return {}


@LOSSES.register(help="distillation: student at T=1 on softmax(z_teacher/T), no hard labels (Barmpas)")
class TemperatureLoss(DistillationLoss):
    name = "temperature"

    def __call__(self, model, x, y, state):
        teacher = self.teacher_logits(x)
        logits = model(x)
        return self.output(kl_to(soft_targets(teacher, self.temperature), logits).mean(), logits, teacher)


@LOSSES.register(help="distillation with hard labels: α·T²·KL(soft) + (1−α)·CE (Hinton et al. 2015)")
class HintonLoss(DistillationLoss):
    name = "hinton"
    needs_labels = True

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, soft_weight: float = 0.9):
        super().__init__(teacher, 4.0 if temperature is None else temperature)
        self.soft_weight = check_weight(self.name, soft_weight, 0.9)

    def __call__(self, model, x, y, state):
        teacher = self.teacher_logits(x)
        logits = model(x)
        t = self.temperature
        soft = kl_to(soft_targets(teacher, t), logits / t).mean() * t * t
        w = self.soft_weight
        loss = w * soft + (1 - w) * F.cross_entropy(logits, y) if w < 1 else soft
        return self.output(loss, logits, teacher, {"train_soft_loss": soft.item()})

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "soft_weight": self.soft_weight}


def check_weight(name: str, weight: float | None, default: float = 1.0) -> float:
    """The soft term's weight α of the papers, named soft_weight: [adversarial] alpha is an attack's step size, and
    both are offered to a loss from one recipe (training/losses.ADVERSARIAL_SETTINGS)."""
    weight = float(default if weight is None else weight)
    if not 0 <= weight <= 1:
        raise EdgeRobustError(f"{name}: soft_weight must be in [0, 1], got {weight}")
    return weight


class RobustDistillationLoss(DistillationLoss):
    """Shared attack settings: L∞ ε, PGD steps, step size (default 2.5ε/steps) and the seed of the random starts."""

    default_soft_weight = 1.0

    def __init__(self, teacher: nn.Module, temperature: float = 1.0, soft_weight: float = 1.0, eps: float = 8 / 255,
                 steps: int = 10, step_size: float | None = None, seed: int = 0):
        super().__init__(teacher, temperature)
        self.soft_weight = check_weight(self.name, soft_weight, self.default_soft_weight)
        self.eps, self.steps, self.seed = float(eps), int(steps), int(seed)
        if not 0 <= self.eps <= 1 or self.steps < 1:
            raise EdgeRobustError(f"{self.name}: eps must be in [0, 1] and steps at least 1 (got {eps}, {steps})")
        self.step_size = 2.5 * self.eps / self.steps if step_size is None else float(step_size)
        self.needs_labels = self.soft_weight < 1

    def step_seed(self, state: StepState) -> int:
        return self.seed * _SEED_STRIDE + state.step

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "soft_weight": self.soft_weight, "eps": self.eps, "steps": self.steps,
                "step_size": self.step_size, "seed": self.seed}


@LOSSES.register(help="adversarially robust distillation: PGD on the student, matching the teacher's clean "
                 "outputs (Goldblum et al. 2020)")
class ARDLoss(RobustDistillationLoss):
    name = "ard"

    def __call__(self, model, x, y, state):
        teacher = self.teacher_logits(x)
        labels = y if self.needs_labels else teacher.argmax(1)
        attack = get_attack("pgd", eps=self.eps, steps=self.steps, alpha=self.step_size, random_init=True,
                            early_exit=False, seed=self.step_seed(state), rows=state.rows)
        x_adv = attack(unwrap(model), x, labels) if self.eps > 0 else x
        t = self.temperature
        adv_logits = model(x_adv)
        soft = kl_to(soft_targets(teacher, t), adv_logits / t).mean() * t * t
        if self.soft_weight < 1:
            logits = model(x)
            loss = self.soft_weight * soft + (1 - self.soft_weight) * F.cross_entropy(logits, y)
        else:
            logits, loss = adv_logits, soft
        agree = (adv_logits.argmax(1) == teacher.argmax(1)).float().mean().item()
        return self.output(loss, logits, teacher, {"train_adv_agreement": agree})


@LOSSES.register(help="robust soft label adversarial distillation: 5/6·KL(x') + 1/6·KL(x) to the teacher's "
                 "soft labels (Zi et al. 2021)")
class RSLADLoss(RobustDistillationLoss):
    name = "rslad"
    default_soft_weight = 5 / 6

    def __init__(self, teacher: nn.Module, temperature: float = 1.0, soft_weight: float = 5 / 6,
                 eps: float = 8 / 255, steps: int = 10, step_size: float | None = None, seed: int = 0):
        super().__init__(teacher, temperature, soft_weight, eps, steps, step_size, seed)
        self.needs_labels = False

    def perturb(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, state: StepState) -> torch.Tensor:
        """PGD maximising Σ KL(target ‖ student(x')) in the L∞ ε-ball, the student in eval mode."""
        if self.eps == 0:
            return x.detach()
        was = model.training
        model.eval()
        try:
            generator = torch.Generator().manual_seed(self.step_seed(state))
            noise = batch_rows(x, state.rows, lambda shape: torch.randn(shape, generator=generator) * 0.001)
            x_adv = project(x.detach() + noise, x, self.eps, "linf")
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(kl_to(target, model(x_adv)).sum(), x_adv)
                x_adv = project(x_adv.detach() + steepest_step(grad, self.step_size, "linf"), x, self.eps, "linf")
        finally:
            model.train(was)
        return x_adv.detach()

    def __call__(self, model, x, y, state):
        teacher = self.teacher_logits(x)
        target = soft_targets(teacher, self.temperature)
        x_adv = self.perturb(unwrap(model), x, target, state)
        classes = teacher.shape[1]
        adv_logits, logits = model(x_adv), model(x)
        robust = kl_to(target, adv_logits).mean() / classes
        natural = kl_to(target, logits).mean() / classes
        loss = self.soft_weight * robust + (1 - self.soft_weight) * natural
        agree = (adv_logits.argmax(1) == teacher.argmax(1)).float().mean().item()
        return self.output(loss, logits, teacher, {"train_adv_agreement": agree})


DISTILLATION_METHODS = ("logit-matching", "temperature", "hinton", "ard", "rslad")


def build_distillation_loss(method: str, teacher: nn.Module, **settings: Any) -> DistillationLoss:
    """A distillation loss by name, given only the settings it declares (None values are left at its default)."""
    import inspect

    cls = LOSSES.get(method)
    if method not in DISTILLATION_METHODS:
        raise EdgeRobustError(f"'{method}' is not a distillation method; choose one of "
                              f"{', '.join(DISTILLATION_METHODS)}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "teacher"}
    return cls(teacher, **{k: v for k, v in settings.items() if k in accepted and v is not None})
