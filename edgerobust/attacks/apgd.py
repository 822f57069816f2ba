"""Auto-PGD (Croce & Hein 2020): step size 2ε halved at checkpoints when progress stalls, with momentum 0.75.

Losses: cross-entropy (`apgd-ce`), the difference-of-logits ratio (`apgd-dlr`) and its targeted form (`apgd-t`,
run once per target among the top `n_target_classes` other classes). Points already misclassified leave the
batch (their adversarial example is kept), so a run costs fewer passes as points break.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EdgeRobustError
from .base import ATTACKS, Attack, checked_logits, project, steepest_step, unit_direction

LOSSES = ("ce", "dlr", "dlr-targeted")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3): invariant to shifting and scaling the logits."""
    ordered, order = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = order[:, -1] == y
    z_other = torch.where(top_is_y, ordered[:, -2], ordered[:, -1])
    return -(z_y - z_other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2)."""
    ordered = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12)


def checkpoint_iterations(steps: int) -> list[int]:
    """The iterations at which the step size may be halved."""
    interval, decrease, minimum = checkpoint_schedule(steps)
    points, at = [], interval
    while at <= steps:
        points.append(at)
        interval = max(interval - decrease, minimum)
        at += interval
    return points


def checkpoint_schedule(steps: int) -> tuple[int, int, int]:
    """First interval, its decrease, and its minimum: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03,
    0.06), in iterations (AutoAttack's integer form)."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


class StepSizeSchedule:
    """APGD's step size per point (Croce & Hein 2020, §3.2, in AutoAttack's integer form): 2ε, halved at a checkpoint
    when the loss rose in at most ρ of the steps since the last one (oscillation), or when the step was not halved at
    the last checkpoint and the best loss has not risen since. As in AutoAttack, "halved at the last checkpoint" starts
    true, so the first checkpoint halves only oscillating steps, and the loss history starts at zero, so the first
    step counts as a rise when its loss is positive."""

    def __init__(self, loss: torch.Tensor, steps: int, eps: float, rho: float):
        self.interval, self.decrease, self.minimum = checkpoint_schedule(steps)
        self.rho, self.counter = rho, 0
        self.step = torch.full_like(loss, 2 * eps)
        self.reduced = torch.ones_like(loss, dtype=torch.bool)
        # AutoAttack compares the first step with the last row of its zero-filled loss history, which for a single
        # step is that step itself (never a rise)
        self.previous = torch.zeros_like(loss) if steps > 1 else torch.full_like(loss, float("inf"))
        self.best_checked, self.rises = loss, torch.zeros_like(loss)

    def observe(self, loss: torch.Tensor, loss_best: torch.Tensor) -> torch.Tensor | None:
        """Record an iteration's loss (and the best so far); at a checkpoint, the points whose step was halved."""
        self.rises = self.rises + (loss > self.previous)
        self.previous = loss
        self.counter += 1
        if self.counter < self.interval:
            return None
        reduce = (self.rises <= self.interval * self.rho) | (~self.reduced & (self.best_checked >= loss_best))
        self.reduced, self.best_checked = reduce, loss_best
        self.step = torch.where(reduce, self.step / 2, self.step)
        self.rises = torch.zeros_like(self.rises)
        self.counter, self.interval = 0, max(self.interval - self.decrease, self.minimum)
        return reduce

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these points (a mask or indices), as the batch is compacted."""
        self.step, self.reduced, self.best_checked = self.step[rows], self.reduced[rows], self.best_checked[rows]
        self.previous, self.rises = self.previous[rows], self.rises[rows]


class APGD(Attack):
    """Auto-PGD with one of `LOSSES`; registered as the three variants below."""

    def __init__(self, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1, loss: str = "ce",
                 n_target_classes: int = 9, rho: float = 0.75, random_init: bool = True, early_exit: bool = True,
                 seed: int | None = 0):
        if loss not in LOSSES:
            raise EdgeRobustError(f"unknown APGD loss '{loss}'; valid losses: {', '.join(LOSSES)}")
        if steps < 1 or restarts < 1:
            raise EdgeRobustError(f"APGD needs steps ≥ 1 and restarts ≥ 1, got steps={steps}, restarts={restarts}")
        settings = dict(steps=int(steps), restarts=int(restarts), loss=loss, rho=rho, initial_step=2 * eps,
                        momentum=0.75, checkpoints=checkpoint_iterations(int(steps)), random_init=bool(random_init),
                        early_exit=bool(early_exit), seed=seed)
        if loss == "dlr-targeted":
            settings["n_target_classes"] = int(n_target_classes)
        super().__init__(eps, norm, **settings)
        self.steps, self.restarts, self.loss, self.rho = int(steps), int(restarts), loss, float(rho)
        self.n_target_classes, self.random_init, self.early_exit, self.seed = (int(n_target_classes),
                                                                                bool(random_init), bool(early_exit),
                                                                                seed)

    # -- the loss -------------------------------------------------------------------------------------------------
    def _loss(self, logits, y, target):
        if self.loss == "ce":
            return F.cross_entropy(logits, y, reduction="none")
        if self.loss == "dlr":
            return dlr_loss(logits, y)
        return targeted_dlr_loss(logits, y, target)

    def _loss_grad(self, model, x, y, target):
        x = x.detach().requires_grad_(True)
        logits = checked_logits(model, x, y)
        minimum = {"ce": 2, "dlr": 3, "dlr-targeted": 4}[self.loss]
        if logits.shape[1] < minimum:
            raise EdgeRobustError(f"APGD with the {self.loss} loss needs at least {minimum} classes, the model has "
                                  f"{logits.shape[1]}; use apgd-ce")
        loss = self._loss(logits, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad, logits.detach()

    # -- the attack -----------------------------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if self.loss == "dlr-targeted":
            with torch.no_grad():
                logits = checked_logits(model, x, y)
            n_targets = min(self.n_target_classes, logits.shape[1] - 1)
            ranked = logits.argsort(dim=1, descending=True)
            targets = [ranked[:, k] for k in range(1, n_targets + 1)]
            # the top class is y for correct points; for wrong ones pick the next class so the target is never y
            targets = [torch.where(t == y, ranked[:, 0], t) for t in targets]
        else:
            targets = [None]
        for target in targets:
            for _ in range(self.restarts):
                todo = ~fooled if self.early_exit else torch.ones_like(fooled)
                if not todo.any():
                    return best
                idx = todo.nonzero().squeeze(1)
                adv, hit = self._one_run(model, x[idx], y[idx], None if target is None else target[idx], generator)
                keep = hit | ~fooled[idx]  # never replace a found adversarial example with a failed one
                best[idx[keep]] = adv[keep]
                fooled[idx] |= hit
        return best

    def _start(self, x, generator):
        if not self.random_init:
            return x.clone()
        direction = unit_direction(x.shape, self.norm, generator, x.device)
        return project(x + self.eps * direction, x, self.eps, self.norm)

    def _one_run(self, model, x, y, target, generator):
        """One restart for one target: the adversarial (or highest-loss) points and whether each is misclassified."""
        n = len(x)
        out = x.clone()
        hit = torch.zeros(n, dtype=torch.bool, device=x.device)
        x_adv = self._start(x, generator)
        loss, grad, logits = self._loss_grad(model, x_adv, y, target)
        schedule = StepSizeSchedule(loss, self.steps, self.eps, self.rho)
        # per-example state, compacted together (with the schedule's) as points break ("pos": the position in the
        # batch); updated with torch.where, never written in place, so tensors may start shared
        s = {"pos": torch.arange(n, device=x.device), "x": x, "y": y, "x_adv": x_adv, "x_prev": x_adv, "grad": grad,
             "x_best": x_adv, "grad_best": grad, "loss": loss, "loss_best": loss}
        if target is not None:
            s["target"] = target
        s = self._record_hits(s, logits, out, hit, schedule)
        for i in range(self.steps):
            if len(s["pos"]) == 0:
                break
            x_adv, x_ref = s["x_adv"], s["x"]
            momentum_term = x_adv - s["x_prev"]
            s["x_prev"] = x_adv
            a = 0.75 if i > 0 else 1.0
            z = project(x_adv + schedule.step.view(-1, 1, 1, 1) * steepest_step(s["grad"], 1.0, self.norm), x_ref,
                        self.eps, self.norm)
            x_adv = project(x_adv + a * (z - x_adv) + (1 - a) * momentum_term, x_ref, self.eps, self.norm)
            loss, grad, logits = self._loss_grad(model, x_adv, s["y"], s.get("target"))
            s["x_adv"], s["grad"], s["loss"] = x_adv, grad, loss
            better = loss > s["loss_best"]
            # torch.where, not masked assignment: no sync, no index list, and the old tensors are never written
            per_example = better.view(-1, 1, 1, 1)
            s["x_best"] = torch.where(per_example, x_adv, s["x_best"])
            s["grad_best"] = torch.where(per_example, grad, s["grad_best"])
            s["loss_best"] = torch.where(better, loss, s["loss_best"])
            s = self._record_hits(s, logits, out, hit, schedule)  # before any reset, while x_adv matches the logits
            reduce = schedule.observe(s["loss"], s["loss_best"])
            if reduce is not None:  # a checkpoint: a halved step restarts from the point's best
                per_example = reduce.view(-1, 1, 1, 1)
                s["x_adv"] = torch.where(per_example, s["x_best"], s["x_adv"])
                s["grad"] = torch.where(per_example, s["grad_best"], s["grad"])
        unbroken = ~hit[s["pos"]]
        out[s["pos"][unbroken]] = s["x_best"][unbroken]
        return out, hit

    def _record_hits(self, s, logits, out, hit, schedule):
        broken = logits.argmax(1) != s["y"]
        if broken.any():
            out[s["pos"][broken]] = s["x_adv"][broken]
            hit[s["pos"][broken]] = True
            if self.early_exit:
                keep = ~broken
                s = {k: v[keep] for k, v in s.items()}
                schedule.keep(keep)
        return s


def _no_alpha(alpha):
    if alpha is not None:
        raise EdgeRobustError("APGD sets its own step size (2ε, halved at checkpoints); drop alpha")


class _UntargetedAPGD(APGD):
    """An untargeted variant: APGD with the class's `variant_loss`, and the common attack settings."""

    variant_loss: str  # "ce" or "dlr"

    def __init__(self, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1, random_init: bool = True,
                 early_exit: bool = True, seed: int | None = 0, alpha: float | None = None, rho: float = 0.75):
        _no_alpha(alpha)
        super().__init__(eps, norm, steps, restarts, self.variant_loss, rho=rho, random_init=random_init,
                         early_exit=early_exit, seed=seed)


@ATTACKS.register(help="Auto-PGD on cross-entropy (Croce & Hein 2020)")
class APGDCE(_UntargetedAPGD):
    name, variant_loss = "apgd-ce", "ce"


@ATTACKS.register(help="Auto-PGD on the difference-of-logits ratio")
class APGDDLR(_UntargetedAPGD):
    name, variant_loss = "apgd-dlr", "dlr"


@ATTACKS.register(help="targeted Auto-PGD on the DLR loss, once per top-ranked other class")
class APGDT(APGD):
    name = "apgd-t"

    def __init__(self, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1, n_target_classes: int = 9,
                 random_init: bool = True, early_exit: bool = True, seed: int | None = 0, alpha: float | None = None,
                 rho: float = 0.75):
        _no_alpha(alpha)
        super().__init__(eps, norm, steps, restarts, "dlr-targeted", n_target_classes, rho, random_init, early_exit,
                         seed)


__all__ = ["APGD", "checkpoint_iterations", "checkpoint_schedule", "dlr_loss", "targeted_dlr_loss"]
