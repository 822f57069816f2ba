"""Peck's FGS binary search (Alg. 2.1): the smallest ε along the gradient sign s = sign(∇ₓL(x, y)) that flips
the prediction, bisected to a tolerance. Returns the adversarial end of the final bracket, so every point it
reports is misclassified; L2 of the result is ε·√(#non-zero signs) before clipping to [0,1]."""
from __future__ import annotations

import math

import torch

from ..errors import EdgeRobustError
from .base import ATTACKS, MinimalAttack
from .pgd import loss_gradient


@ATTACKS.register(help="Peck's FGS binary search for the smallest ε along the gradient sign")
class FGSSearch(MinimalAttack):
    name = "fgs-search"

    def __init__(self, eps: float | None = None, norm: str = "linf", max_eps: float = 100 / 255,
                 tolerance: float = 1e-4):
        if not 0 < max_eps <= 1 or not tolerance > 0:
            raise EdgeRobustError("fgs-search needs 0 < max_eps ≤ 1 and tolerance > 0 (pixel units)")
        super().__init__(eps, norm, max_eps=float(max_eps), tolerance=float(tolerance),
                         iterations=self._iterations(max_eps, tolerance))
        self.max_eps, self.tolerance = float(max_eps), float(tolerance)

    @staticmethod
    def _iterations(max_eps: float, tolerance: float) -> int:
        return max(math.ceil(math.log2(max_eps / tolerance)), 0)

    def perturb(self, model, x, y):
        grad, _ = loss_gradient(model, x, y)
        sign = grad.sign()
        n = len(x)
        lo, hi = torch.zeros(n, device=x.device), torch.full((n,), self.max_eps, device=x.device)

        def flipped(scale):
            with torch.no_grad():
                return model((x + scale.view(-1, 1, 1, 1) * sign).clamp(0, 1)).argmax(1) != y

        found = flipped(hi)  # no flip even at the cap: the search failed for that point
        for _ in range(self._iterations(self.max_eps, self.tolerance)):
            mid = (lo + hi) / 2
            flip = flipped(mid)
            hi, lo = torch.where(flip, mid, hi), torch.where(flip, lo, mid)
        x_adv = (x + hi.view(-1, 1, 1, 1) * sign).clamp(0, 1)
        x_adv[~found] = x[~found]
        return x_adv
