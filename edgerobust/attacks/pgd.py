"""FGSM, FGSM with random start, and PGD (random start, restarts keeping each example's worst, early exit)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ATTACKS, Attack, check_logits, project, random_start, steepest_step


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example cross-entropy gradient w.r.t. the input, and the logits it came from (one forward+backward)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    check_logits(logits, y)
    loss = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


@ATTACKS.register(help="projected gradient descent (random start, restarts, early exit)")
class PGD(Attack):
    """Projected gradient descent on cross-entropy (Madry et al. 2018); `steps=1, alpha=eps, no start` is FGSM."""

    def __init__(self, eps: float, norm: str = "linf", steps: int = 20, alpha: float | None = None,
                 restarts: int = 1, random_init: bool = True, early_exit: bool = True, seed: int | None = 0,
                 rows: tuple[int, int] | None = None):
        alpha = float(alpha) if alpha is not None else (2.5 * eps / steps if steps > 1 else eps)
        super().__init__(eps, norm, steps=int(steps), alpha=alpha, restarts=int(restarts),
                         random_init=bool(random_init), early_exit=bool(early_exit), seed=seed)
        self.steps, self.alpha, self.restarts = int(steps), alpha, int(restarts)
        self.random_init, self.early_exit = bool(random_init), bool(early_exit)
        self.seed = seed
        self.rows = rows  # the random start's rows of a batch split across processes (see base.batch_rows)

    def perturb(self, model, x, y):
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        if self.restarts == 1:  # nothing to compare: no scoring forward (it was a third of FGSM-RS's step)
            return self._one_run(model, x, y, generator)
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_loss = torch.full((len(x),), -float("inf"), device=x.device)
        for _ in range(self.restarts):
            todo = ~fooled if self.early_exit else torch.ones_like(fooled)
            if not todo.any():
                break
            idx = todo.nonzero().squeeze(1)
            adv = self._one_run(model, x[idx], y[idx], generator)
            with torch.no_grad():
                logits = model(adv)
            loss, hit = F.cross_entropy(logits, y[idx], reduction="none"), logits.argmax(1) != y[idx]
            # a misclassifying point beats any other; between equals the higher loss wins
            was_hit = fooled[idx]
            better = (hit & ~was_hit) | ((hit == was_hit) & (loss > best_loss[idx]))
            best[idx[better]] = adv[better]
            best_loss[idx[better]] = loss[better]
            fooled[idx] |= hit
        return best

    def _one_run(self, model, x, y, generator):
        """One restart: the adversarial points (a point already misclassified keeps its example, with early exit)."""
        rows = self.rows if self.restarts == 1 else None  # later restarts see only a subset of the batch
        x_adv = random_start(x, self.eps, self.norm, generator, rows) if self.random_init else x.clone()
        active = torch.arange(len(x), device=x.device)
        done_adv = x_adv.clone()
        for _ in range(self.steps):
            grad, logits = loss_gradient(model, x_adv[active], y[active])
            if self.early_exit:
                # points already misclassified keep their current adversarial example
                broken = logits.argmax(1) != y[active]
                done_adv[active[broken]] = x_adv[active[broken]]
                keep = ~broken
                active, grad = active[keep], grad[keep]
                if len(active) == 0:
                    break
            x_adv[active] = project(x_adv[active] + steepest_step(grad, self.alpha, self.norm), x[active],
                                    self.eps, self.norm)
        done_adv[active] = x_adv[active]
        return done_adv


@ATTACKS.register(help="fast gradient sign method (one step of size ε)")
class FGSM(PGD):
    """PGD's one step of size ε from x itself (Goodfellow et al. 2015); other settings are ignored."""

    def __init__(self, eps: float, norm: str = "linf", **_):
        super().__init__(eps, norm, steps=1, alpha=eps, restarts=1, random_init=False, early_exit=False)
        self.settings = {"steps": 1, "alpha": eps}


@ATTACKS.register(help="FGSM from a random start with step 1.25ε (Wong et al. 2020)")
class FGSMRS(PGD):
    """One step of size α (default 1.25ε) from a uniformly random point of the ε-ball."""

    name = "fgsm-rs"

    def __init__(self, eps: float, norm: str = "linf", alpha: float | None = None, seed: int | None = 0,
                 rows: tuple[int, int] | None = None, **_):
        alpha = 1.25 * eps if alpha is None else alpha
        super().__init__(eps, norm, steps=1, alpha=alpha, restarts=1, random_init=True, early_exit=False, seed=seed,
                         rows=rows)
        self.settings = {"steps": 1, "alpha": alpha, "random_init": True, "seed": seed}


@ATTACKS.register(help="basic iterative method: PGD without random start, α = ε/steps·2.5")
class BIM(PGD):
    """PGD from x itself (Kurakin et al. 2017), one run."""

    def __init__(self, eps: float, norm: str = "linf", steps: int = 20, alpha: float | None = None,
                 early_exit: bool = True, **_):
        super().__init__(eps, norm, steps, alpha, restarts=1, random_init=False, early_exit=early_exit)
