"""MIM, the momentum iterative method (Dong et al. 2018): PGD whose step follows an accumulated L1-normalised
gradient, g ← μ·g + ∇/‖∇‖₁, which stabilises the direction (and transfers better)."""
from __future__ import annotations

import torch

from .base import ATTACKS, project, random_start, steepest_step
from .pgd import PGD, loss_gradient


@ATTACKS.register(help="momentum iterative method (Dong et al. 2018), α = ε/steps, μ = 1")
class MIM(PGD):
    def __init__(self, eps: float, norm: str = "linf", steps: int = 10, alpha: float | None = None,
                 decay: float = 1.0, restarts: int = 1, random_init: bool = False, early_exit: bool = True,
                 seed: int | None = 0):
        alpha = float(alpha) if alpha is not None else eps / steps
        super().__init__(eps, norm, steps, alpha, restarts, random_init, early_exit, seed)
        self.decay = float(decay)
        self.settings["decay"] = self.decay

    def _one_run(self, model, x, y, generator):
        x_adv = random_start(x, self.eps, self.norm, generator) if self.random_init else x.clone()
        momentum = torch.zeros_like(x)
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            grad, logits = loss_gradient(model, x_adv[active], y[active])
            if self.early_exit:
                keep = logits.argmax(1) == y[active]  # broken points keep their current example
                active, grad = active[keep], grad[keep]
                if len(active) == 0:
                    break
            grad = grad / grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            momentum[active] = self.decay * momentum[active] + grad
            x_adv[active] = project(x_adv[active] + steepest_step(momentum[active], self.alpha, self.norm),
                                    x[active], self.eps, self.norm)
        return x_adv
