"""Square attack (Andriushchenko et al. 2020): score-based black-box random search under a query budget, L∞.

Forward passes only, so it is the ensemble's check against gradient masking. Vertical-stripe start, square
windows set to ±ε per channel whose side shrinks on the paper's schedule, a change is kept when the margin drops.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import EdgeRobustError
from .base import ATTACKS, Attack, checked_logits


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{i≠y} z_i: negative once the point is misclassified."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -float("inf"))
    return z_y - others.amax(1)


def square_fraction(p_init: float, query: int, budget: int) -> float:
    """The fraction of pixels a square covers, halved at fixed points of the budget (rescaled to 10,000)."""
    it = int(query / budget * 10000)
    for limit, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                           (8000, 256), (10000, 512)):
        if it <= limit:
            return p_init / divisor
    return p_init / 512


class Square(Attack):
    name = "square"

    def __init__(self, eps: float, norm: str = "linf", queries: int = 1000, p_init: float = 0.8, restarts: int = 1,
                 seed: int | None = 0):
        if norm != "linf":
            raise EdgeRobustError("the square attack is implemented for the linf norm only; use --norm linf")
        if queries < 1:
            raise EdgeRobustError(f"square needs a query budget of at least 1, got {queries}")
        super().__init__(eps, norm, queries=int(queries), p_init=float(p_init), restarts=int(restarts), seed=seed,
                         loss="margin")
        self.queries, self.p_init, self.restarts, self.seed = int(queries), float(p_init), int(restarts), seed
        self.queries_used: torch.Tensor | None = None  # per example, after a call

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool)
        used = torch.zeros(len(x), dtype=torch.long)
        for _ in range(self.restarts):
            idx = (~fooled).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            adv, hit, queries = self._one_run(model, x[idx], y[idx], generator)
            best[idx], used[idx] = adv, used[idx] + queries
            fooled[idx] |= hit
        self.queries_used = used
        return best

    def _one_run(self, model, x, y, generator):
        n, c, h, w = x.shape
        eps = self.eps
        stripes = (torch.randint(0, 2, (n, c, 1, w), generator=generator) * 2 - 1).to(x.dtype) * eps
        x_best = (x + stripes).clamp(0, 1)
        with torch.no_grad():
            margin_min = margin(checked_logits(model, x_best, y), y)
        queries = torch.ones(n, dtype=torch.long)
        rows, cols = torch.arange(h), torch.arange(w)
        for query in range(1, self.queries):
            idx = (margin_min > 0).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            x_cur, x_best_cur = x[idx], x_best[idx]
            deltas = x_best_cur - x_cur
            side = min(max(int(round(math.sqrt(square_fraction(self.p_init, query, self.queries) * h * w))), 1),
                       max(h - 1, 1))
            top = torch.randint(0, max(h - side, 1), (len(idx),), generator=generator)
            left = torch.randint(0, max(w - side, 1), (len(idx),), generator=generator)
            in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + side)
            in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + side)
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (m, 1, h, w)
            signs = torch.zeros(len(idx), c, 1, 1)
            redo = torch.ones(len(idx), dtype=torch.bool)
            for _ in range(10):  # a window that would leave the image unchanged wastes a query: redraw it
                signs[redo] = (torch.randint(0, 2, (int(redo.sum()), c, 1, 1), generator=generator) * 2 - 1).float()
                candidate = torch.where(window, signs * eps, deltas)
                same = ((x_cur + candidate).clamp(0, 1) - x_best_cur).abs() < 1e-7
                redo = (same | ~window).flatten(1).all(1)
                if not redo.any():
                    break
            x_new = (x_cur + candidate).clamp(0, 1)
            with torch.no_grad():
                new_margin = margin(model(x_new), y[idx])
            queries[idx] += 1
            better = new_margin < margin_min[idx]
            x_best[idx[better]] = x_new[better]
            margin_min[idx[better]] = new_margin[better]
        return x_best, margin_min < 0, queries


@ATTACKS.register("square", "Square attack: score-based black-box random search with a query budget (L∞)")
def build_square(eps: float, norm: str = "linf", queries: int = 1000, p_init: float = 0.8, restarts: int = 1,
                 seed: int | None = 0) -> Square:
    return Square(eps, norm, queries, p_init, restarts, seed)
