"""Carlini-Wagner L2 (2017): minimise ‖δ‖₂² + c·max(z_y − max_{i≠y} z_i + κ, 0) over tanh-space inputs with
Adam, binary-searching c per example; keeps the smallest successful perturbation found."""
from __future__ import annotations

import torch

from ..errors import EdgeRobustError
from .base import ATTACKS, MinimalAttack, checked_logits


@ATTACKS.register(help="Carlini-Wagner L2: Adam in tanh space, binary search on c (minimal perturbation)")
class CarliniWagnerL2(MinimalAttack):
    name = "cw"
    norms = ("l2",)

    def __init__(self, eps: float | None = None, norm: str = "l2", steps: int = 100, search_steps: int = 5,
                 c_init: float = 1.0, lr: float = 0.01, confidence: float = 0.0):
        if norm != "l2":
            raise EdgeRobustError("cw is the L2 Carlini-Wagner attack; use --norm l2")
        if steps < 1 or search_steps < 1 or not lr > 0 or not c_init > 0:
            raise EdgeRobustError("cw needs steps ≥ 1, search_steps ≥ 1, lr > 0 and c_init > 0")
        super().__init__(eps, norm, steps=int(steps), search_steps=int(search_steps), c_init=float(c_init),
                         lr=float(lr), confidence=float(confidence))
        self.steps, self.search_steps, self.c_init = int(steps), int(search_steps), float(c_init)
        self.lr, self.confidence = float(lr), float(confidence)

    def perturb(self, model, x, y):
        n = len(x)
        lower, upper = torch.zeros(n, device=x.device), torch.full((n,), float("inf"), device=x.device)
        c = torch.full((n,), self.c_init, device=x.device)
        best_norm = torch.full((n,), float("inf"), device=x.device)
        best = x.clone()
        w_start = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        for _ in range(self.search_steps):
            w = w_start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                x_new = (torch.tanh(w) + 1) / 2
                logits = checked_logits(model, x_new, y)
                z_y = logits.gather(1, y[:, None]).squeeze(1)
                z_other = logits.scatter(1, y[:, None], -float("inf")).amax(1)
                sq_norm = (x_new - x).flatten(1).pow(2).sum(1)
                loss = (sq_norm + c * (z_y - z_other + self.confidence).clamp_min(0)).sum()
                optimizer.zero_grad()
                (w.grad,) = torch.autograd.grad(loss, w)
                optimizer.step()
                with torch.no_grad():
                    fooled = (logits.argmax(1) != y) & (z_other - z_y >= self.confidence)
                    dist = sq_norm.sqrt()
                    improved = fooled & (dist < best_norm)
                    best[improved], best_norm[improved] = x_new.detach()[improved], dist[improved]
                    succeeded |= fooled
            upper = torch.where(succeeded, torch.minimum(upper, c), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, c))
            c = torch.where(torch.isfinite(upper), (lower + upper) / 2, c * 10)
        return best
