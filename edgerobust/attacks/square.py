"""Square attack (Andriushchenko et al. 2020): score-based black-box random search under a query budget, L∞.

Forward passes only, so it is the ensemble's check against gradient masking. Vertical-stripe start, square
windows set to ±ε per channel whose side shrinks on the paper's schedule, a change is kept when the margin drops.
One window position per query serves the whole batch (as in AutoAttack's implementation: for each point it is the
same uniform draw as a window of its own, and it is a slice, not a mask). A window whose signs would leave the image
unchanged wastes a query, so its signs are redrawn (up to 10 draws, as the paper's code redraws until the window
changes something): the draws are made up front, per point of the whole batch, and the first that changes the image
is taken, so a point's draws do not depend on which other points are still attacked. Points leave the batch once
misclassified; every random draw comes from the seeded CPU generator.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import EdgeRobustError
from .base import ATTACKS, Attack, checked_logits, cpu_draw


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


@ATTACKS.register(help="Square attack: score-based black-box random search with a query budget (L∞)")
class Square(Attack):
    norms = ("linf",)

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
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        used = torch.zeros(len(x), dtype=torch.long, device=x.device)
        for _ in range(self.restarts):
            idx = (~fooled).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            adv, hit, queries = self._one_run(model, x[idx], y[idx], generator)
            best[idx], used[idx] = adv, used[idx] + queries
            fooled[idx] |= hit
        self.queries_used = used
        return best

    @torch.inference_mode()  # forward passes only, and none of its tensors is ever differentiated
    def _one_run(self, model, x, y, generator):
        """One run: the best points, whether each is misclassified, and the queries each used."""
        n, c, h, w = x.shape
        eps = self.eps
        stripes = (cpu_draw(torch.randint, 0, 2, (n, c, 1, w), generator=generator, device=x.device) * 2 - 1) * eps
        x_best = (x + stripes.to(x.dtype)).clamp(0, 1)
        margin_best = margin(checked_logits(model, x_best, y), y)
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        # the window of each query: its side on the paper's schedule, its corner drawn uniformly
        sides = [min(max(int(round(math.sqrt(square_fraction(self.p_init, q, self.queries) * h * w))), 1),
                     max(h - 1, 1)) for q in range(1, self.queries)]
        windows = [(min(side, h), min(side, w), int(u * max(h - side, 1)), int(v * max(w - side, 1))) for side, (u, v)
                   in zip(sides, torch.rand((len(sides), 2), generator=generator).tolist(), strict=True)]
        # the points still correctly classified, compacted as they break ("pos": their position in the batch), with
        # per point: the images clip(x − ε), clip(x + ε) and best, stacked (3, m, c, h, w) so one slice cuts the
        # query's window from all three, the label column, a −inf mask at the label (for the margin, made at the
        # first query, when the class count is known) and the margin as a column (m, 1)
        pos = (margin_best > 0).nonzero().squeeze(1)
        images = torch.stack([(x[pos] - eps).clamp(0, 1), (x[pos] + eps).clamp(0, 1), x_best[pos]])
        a_margin, a_y, a_mask, m = margin_best[pos, None], y[pos, None], None, len(pos)
        # every pixel of the best points sits at one of its two candidates, and they differ (so far always, for
        # x in [0, 1] and ε > 0 in x's precision): then counting the pixels at x + ε decides every sign set, and
        # with one channel the chosen sign has a closed form (sign_table; states: window area → count → column)
        lo, hi, best = images
        two_valued = bool(((lo != hi) & ((best == lo) | (best == hi))).all())
        closed, states = two_valued and c == 1, {}
        for query in range(1, self.queries):
            if m == 0:
                break
            block = (query - 1) % SIGN_BLOCK
            if block == 0:  # the sign draws of the next queries, per point of the whole batch
                draws = cpu_draw(torch.rand, (SIGN_BLOCK, n, REDRAWS, c), generator=generator,
                                 device=x.device).index_select(1, pos)  # +ε below 0.5: (block, m, draws, c)
                a_plus = sign_table(draws)[..., None, None] if closed else draws < 0.5  # (block, m, 3, 1, 1) or bool
            rows, cols, top, left = windows[query - 1]
            lo, hi, now = images.narrow(3, top, rows).narrow(4, left, cols).unbind()  # now: a view into best
            if closed:  # the column of the sign table: none, some or all of the window's pixels at x + ε
                if rows * cols not in states:
                    states[rows * cols] = torch.tensor([0] + [1] * (rows * cols - 1) + [2], device=x.device)
                at_plus = (now == hi).sum(dim=(2, 3), keepdim=True)
                signs = a_plus[block].gather(1, states[rows * cols].take(at_plus))
            else:  # both signs per channel (m, c, rows, cols), then the first drawn sign set that changes the image
                signs = first_changing_signs(lo, hi, now, a_plus[block], two_valued).view(m, c, 1, 1)
            old = now.clone()
            torch.where(signs, hi, lo, out=now)  # the query: best with the window set to the signs
            logits = model(images[2])
            if a_mask is None:
                a_mask = torch.zeros_like(logits).scatter_(1, a_y, -float("inf"))
            new_margin = logits.gather(1, a_y) - (logits + a_mask).amax(1, keepdim=True)
            improved = new_margin < a_margin  # kept; otherwise the window is put back
            torch.where(improved.view(m, 1, 1, 1), now, old, out=now)
            a_margin = torch.minimum(new_margin, a_margin)
            if new_margin.min().item() < 0:  # some broke: write them back and drop them from the batch
                broken = a_margin.squeeze(1) < 0
                done, keep = broken.nonzero().squeeze(1), (~broken).nonzero().squeeze(1)
                at = pos[done]
                x_best[at], margin_best[at], queries[at] = images[2, done], a_margin[done, 0], query + 1
                pos, a_y, a_mask = pos.index_select(0, keep), a_y.index_select(0, keep), a_mask.index_select(0, keep)
                images, a_margin = images.index_select(1, keep), a_margin.index_select(0, keep)
                a_plus, m = a_plus.index_select(1, keep), len(keep)
        x_best[pos], margin_best[pos], queries[pos] = images[2], a_margin.squeeze(1), self.queries  # the whole budget
        return x_best, margin_best < 0, queries


REDRAWS = 10  # sign sets drawn per point and query; the first that changes the image is used
SIGN_BLOCK = 10  # queries whose sign draws are made at once (a block is compacted with the batch)


def sign_table(draws: torch.Tensor) -> torch.Tensor:
    """With one channel, the sign first_changing_signs picks, per state of the window, from the draws
    (..., draws, 1), +ε where a draw is below 0.5: a table (..., 3), True = +ε, whose columns are the window's
    states. 0: no pixel at x + ε, so −ε changes nothing and the first +ε is taken (where every draw is −ε, the first:
    −ε; so "any +ε": the least draw below 0.5); 1: some but not all, so every draw changes it and the first is taken;
    2: all at x + ε, so the first −ε ("all +ε": the greatest draw below 0.5)."""
    draws = draws[..., 0]
    least, greatest = torch.aminmax(draws, dim=-1)
    return torch.stack([least, draws[..., 0], greatest], dim=-1) < 0.5


def first_changing_signs(lo: torch.Tensor, hi: torch.Tensor, best: torch.Tensor, plus: torch.Tensor,
                         two_valued: bool = False) -> torch.Tensor:
    """Per point, the first of its drawn sign sets (plus: (m, draws, c), True = +ε) that changes the image (the
    first set where none does), as (m, 1, c): the paper code's redraw loop, with every draw made up front.
    lo, hi: (m, c, s, s) the window clipped at x − ε and at x + ε; best: (m, c, s, s) the window now. A sign
    changes a channel when some pixel of its candidate differs from best (exactly: best's window pixels were
    computed the same way, as x ± ε clipped), so one comparison per sign decides every set. two_valued: every pixel
    of best equals exactly one of its two candidates, so a channel is unchanged by +ε iff all s² of its pixels sit at
    x + ε and by −ε iff none does: one comparison with hi and a count decide it."""
    m, draws, c = plus.shape
    if two_valued:
        at_plus = (best == hi).sum(dim=(2, 3))  # (m, c)
        changed = at_plus[:, None] != plus * (best.shape[2] * best.shape[3])  # (m, draws, c)
    else:
        by_hi, by_lo = (hi != best).any(dim=(2, 3)), (lo != best).any(dim=(2, 3))  # (m, c)
        changed = torch.where(plus.bool(), by_hi[:, None], by_lo[:, None])  # (m, draws, c)
    changed = changed.view(m, draws) if c == 1 else changed.any(2)
    # argmax returns the first maximum; where no draw changes anything it returns the first draw (the loop would
    # keep its last: both are one uniform draw)
    return plus.gather(1, changed.view(torch.uint8).argmax(1).view(m, 1, 1).expand(m, 1, c))
