"""FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020): minimally distorted L∞ / L2 examples.

Each iteration linearises the classifier at the current point x_i (logit differences f_l − f_y and their input
gradients, one backward per difference) and takes the nearest linearised boundary: over all classes for `fab`, the
target's for `fab-t` (run once per top-ranked other class, like AutoAttack's FAB-T). Both x_i and the original x are
projected onto that hyperplane ∩ [0,1] (δ_i, δ_x), and the step is the biased convex combination
x_{i+1} = clip((1 − α)(x_i + η·δ_i) + α(x + η·δ_x)), α = min(‖δ_i‖ / (‖δ_i‖ + ‖δ_x‖), α_max).
An adversarial x_{i+1} is recorded and pulled back towards x: x_{i+1} ← (1 − β)·x + β·x_{i+1}. Restarts begin at a
random point 0.5·min(ε, best so far) from x; a final bisection on the segment from x to the best point trims what the
overshoot η left (after every run, so restarts and targets compare final points). Success is any misclassification;
each point keeps the smallest perturbation found.

FAB-T attacks several targets in one batch (target-major blocks of the same points, as many as keep the batch near
`TARGET_BATCH_ELEMENTS` input elements) and folds the results in target order, exactly as one run per target would:
given ε, a point found within it by a target is done, so its rows for later targets stop. Restarts come after all
targets' first runs (restart-major), each from the best found so far.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import EdgeRobustError
from .base import ATTACKS, MinimalAttack, checked_logits, perturbation_norm, unit_direction


def hyperplane_box_step(p: torch.Tensor, w: torch.Tensor, h: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row, the δ of least `norm` with ⟨w, δ⟩ = h and p + δ in [0,1] (p, w: (n, d), h: (n,)); where the box
    never reaches the hyperplane, the box vertex closest to it.

    Both norms reduce to solving ψ(t) = Σ_j a_j·min(t, τ_j) = |h| for t ≥ 0 (ψ is piecewise linear, non-decreasing):
    L∞: δ_j = s_j·min(t, c_j), a_j = |w_j|, τ_j = c_j; L2 (KKT: δ = clip(λw)): δ_j = s_j·|w_j|·min(t, τ_j), a_j = w_j²,
    τ_j = c_j/|w_j|; s_j = sign(h·w_j) and c_j is the room to the box face in that direction.
    """
    # no library fits: torch and scipy offer no batched box-constrained projection onto a hyperplane, so this sorts
    # the breakpoints τ_j and reads the exact t off the prefix sums of the piecewise-linear ψ
    sign_h = torch.where(h < 0, -1.0, 1.0).to(p.dtype)
    direction = torch.sign(w) * sign_h[:, None]  # s_j: the sign of δ_j that moves ⟨w, δ⟩ towards h
    room = torch.where(direction > 0, 1 - p, p).clamp_min(0)
    magnitude = w.abs()
    if norm == "linf":
        a, tau = magnitude, room
    else:
        a, tau = magnitude ** 2, torch.where(magnitude > 0, room / magnitude.clamp_min(1e-30), torch.zeros_like(room))
    if tau.device.type == "cpu":  # numpy sorts many short rows several times faster than torch does on the CPU
        order = torch.from_numpy(np.argsort(tau.detach().numpy(), axis=1))
        tau_sorted = tau.gather(1, order)
    else:
        tau_sorted, order = tau.sort(dim=1)
    a_sorted = a.gather(1, order)
    capped = a_sorted * tau_sorted
    below = capped.cumsum(1) - capped  # Σ_{i<k} a_i τ_i: the coordinates already at their face
    free = a_sorted.flip(1).cumsum(1).flip(1)  # Σ_{i≥k} a_i: those still growing with t
    reach = below + tau_sorted * free  # ψ(τ_k)
    need = h.abs()
    k = (reach < need[:, None]).sum(1)  # the first breakpoint at which the hyperplane is reached
    d = p.shape[1]
    kc = k.clamp(max=d - 1)[:, None]
    t = (need - below.gather(1, kc).squeeze(1)) / free.gather(1, kc).squeeze(1).clamp_min(1e-30)
    # unreachable (k = d): every coordinate goes to its face
    t = torch.where(k < d, t.clamp_min(0), torch.full_like(t, float("inf")))
    length = torch.minimum(t[:, None], tau)
    return direction * (length if norm == "linf" else magnitude * length)


TARGET_BATCH_ELEMENTS = 2**21  # input elements per batch up to which FAB-T attacks several targets at once


@ATTACKS.register(help="FAB: fast adaptive boundary attack, nearest linearised boundary (minimal perturbation)")
class FAB(MinimalAttack):
    """FAB (Croce & Hein 2020), untargeted; `FABT` attacks each of the top-ranked other classes."""

    targeted = False

    def __init__(self, eps: float | None = None, norm: str = "linf", steps: int = 10, restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, search_steps: int = 10,
                 seed: int | None = 0, *, n_target_classes: int = 9):
        if steps < 1 or restarts < 1 or search_steps < 0 or n_target_classes < 1:
            raise EdgeRobustError("fab needs steps ≥ 1, restarts ≥ 1, search_steps ≥ 0 and n_target_classes ≥ 1")
        if not 0 <= alpha_max <= 1 or not eta >= 1 or not 0 < beta <= 1:
            raise EdgeRobustError(f"fab needs 0 ≤ alpha_max ≤ 1, eta ≥ 1 and 0 < beta ≤ 1, got alpha_max={alpha_max}, "
                                  f"eta={eta}, beta={beta}")
        settings = dict(steps=int(steps), restarts=int(restarts), alpha_max=float(alpha_max), eta=float(eta),
                        beta=float(beta), search_steps=int(search_steps), seed=seed)
        if self.targeted:
            settings["n_target_classes"] = int(n_target_classes)
        super().__init__(eps, norm, **settings)
        self.steps, self.restarts, self.search_steps = int(steps), int(restarts), int(search_steps)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        self.n_target_classes, self.seed = int(n_target_classes), seed

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        with torch.no_grad():
            logits = checked_logits(model, x, y)
        if logits.shape[1] < 2:
            raise EdgeRobustError(f"fab needs a model with at least 2 classes, this one has {logits.shape[1]}")
        best = x.clone()
        # a point the model already gets wrong needs no perturbation
        best_norm = torch.where(logits.argmax(1) == y, float("inf"), 0.0).to(x.dtype)
        if self.targeted:
            ranked = logits.argsort(dim=1, descending=True)
            # the top class is y for correct points; wrong ones are never attacked, but their target must not be y
            targets = [torch.where(ranked[:, k] == y, ranked[:, 0], ranked[:, k])
                       for k in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1)]
        else:
            targets = [None]
        enough = 0.0 if self.eps is None else self.eps  # given ε, a point found within it is done
        # targets that share a batch: as many as keep it near TARGET_BATCH_ELEMENTS (at least one)
        group = max(1, min(len(targets), TARGET_BATCH_ELEMENTS // max(x[0].numel() * len(x), 1)))
        for restart in range(self.restarts):
            for first in range(0, len(targets), group):
                todo = best_norm > enough
                if restart > 0:
                    radius = 0.5 * best_norm.clamp(max=float("inf") if self.eps is None else self.eps)
                    todo &= torch.isfinite(radius)  # unbounded and nothing found yet: no scale for a random start
                if not todo.any():
                    continue
                idx = todo.nonzero().squeeze(1)
                chosen = targets[first:first + group]
                k, m = len(chosen), len(idx)
                # one batch of k·m rows, target-major: row j·m + i is point idx[i] against target first + j
                xs, ys = x[idx].repeat(k, 1, 1, 1), y[idx].repeat(k)
                target = None if chosen[0] is None else torch.cat([t[idx] for t in chosen])
                start = xs if restart == 0 else self._random_start(xs, radius[idx].repeat(k), generator)
                adv, dist = self._one_run(model, xs, ys, target, start, k)
                for j in range(k):  # in target order, as one run per target would: a later one only if needed
                    rows = slice(j * m, (j + 1) * m)
                    better = (dist[rows] < best_norm[idx]) & (best_norm[idx] > enough)
                    best[idx[better]], best_norm[idx[better]] = adv[rows][better], dist[rows][better]
        return best

    def _random_start(self, x: torch.Tensor, radius: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A random point at `radius` (per example) from x, clipped to [0,1]."""
        direction = unit_direction(x.shape, self.norm, generator, x.device)
        return (x + radius.view(-1, 1, 1, 1) * direction).clamp(0.0, 1.0)

    def _boundary(self, model, x, y, target):
        """The linearised boundary to cross at x: f = z_s − z_y and its input gradient w, for the target s, or the s ≠ y
        whose linearised boundary is nearest (|f| / ‖w‖_dual)."""
        xg = x.clone().requires_grad_(True)
        z = checked_logits(model, xg, y)
        z_y = z.gather(1, y[:, None]).squeeze(1)
        if target is not None:
            f = z.gather(1, target[:, None]).squeeze(1) - z_y
            (w,) = torch.autograd.grad(f.sum(), xg)
            return f.detach(), w
        classes = z.shape[1]
        ranks = torch.arange(classes - 1, device=y.device)[None, :]
        others = ranks + (ranks >= y[:, None]).long()  # the classes other than y, per example
        best_dist = torch.full((len(x),), float("inf"), device=x.device)
        best_f, best_w = torch.zeros_like(best_dist), torch.zeros_like(x)
        for j in range(classes - 1):
            f = z.gather(1, others[:, j:j + 1]).squeeze(1) - z_y
            (w,) = torch.autograd.grad(f.sum(), xg, retain_graph=j < classes - 2)
            flat = w.flatten(1)
            dual = flat.abs().sum(1) if self.norm == "linf" else flat.norm(dim=1)
            dist = f.detach().abs() / dual.clamp_min(1e-12)
            closer = dist < best_dist
            best_dist[closer], best_f[closer], best_w[closer] = dist[closer], f.detach()[closer], w[closer]
        return best_f, best_w

    def _one_run(self, model, x, y, target, start, groups=1):
        """One run from `start`: the smallest adversarial point found per row and its norm (inf: none). The rows are
        `groups` blocks of the same points (one per target); given ε, a row stops once it or the row of an earlier
        block for its point is within ε (a later target's point would not be used)."""
        out, out_norm = x.clone(), torch.full((len(x),), float("inf"), dtype=x.dtype, device=x.device)
        x_i = start.clone()
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            if len(active) == 0:
                break
            xa, xo, ya = x_i[active], x[active], y[active]
            f, w = self._boundary(model, xa, ya, None if target is None else target[active])
            w = w.flatten(1)
            p_i, p_x = xa.flatten(1), xo.flatten(1)
            # the hyperplane f + ⟨w, z − x_i⟩ = 0, reached from x_i and from the original x (one call for both)
            deltas = hyperplane_box_step(torch.cat([p_i, p_x]), torch.cat([w, w]),
                                         torch.cat([-f, -(f + (w * (p_x - p_i)).sum(1))]), self.norm)
            delta_i, delta_x = deltas.chunk(2)
            n_i, n_x = self._norm(delta_i), self._norm(delta_x)
            alpha = (n_i / (n_i + n_x).clamp_min(1e-12)).clamp(max=self.alpha_max)[:, None]
            x_new = ((1 - alpha) * (p_i + self.eta * delta_i) + alpha * (p_x + self.eta * delta_x)).clamp(0.0, 1.0)
            x_new = x_new.view_as(xa)
            with torch.no_grad():
                adv = model(x_new).argmax(1) != ya
            dist = perturbation_norm(x_new, xo, self.norm)
            improved = adv & (dist < out_norm[active])
            out_norm[active] = torch.where(improved, dist, out_norm[active])
            out[active] = torch.where(improved.view(-1, 1, 1, 1), x_new, out[active])
            # the backward step: from an adversarial point, back towards x (it stays in [0,1]: a convex combination)
            x_i[active] = torch.where(adv.view(-1, 1, 1, 1), (1 - self.beta) * xo + self.beta * x_new, x_new)
            if self.eps is not None:
                settled = (out_norm <= self.eps).view(groups, -1)
                # settled, or a block before it settled for the same point
                done = (settled.cumsum(0) > 0).view(-1)
                active = active[~done[active]]
        return self._final_search(model, x, y, out, out_norm)

    def _norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.abs().amax(1) if self.norm == "linf" else delta.norm(dim=1)

    def _final_search(self, model, x, y, best, best_norm):
        """Bisect the segment from x to each point found for the nearest point on it that is still adversarial; the
        points and their norms."""
        idx = torch.isfinite(best_norm).nonzero().squeeze(1)
        if len(idx) == 0 or self.search_steps == 0:
            return best, best_norm
        xo, gap, yo = x[idx], best[idx] - x[idx], y[idx]
        lo, hi = torch.zeros(len(idx), device=x.device), torch.ones(len(idx), device=x.device)
        for _ in range(self.search_steps):
            mid = (lo + hi) / 2
            with torch.no_grad():
                adv = model((xo + mid.view(-1, 1, 1, 1) * gap).clamp(0.0, 1.0)).argmax(1) != yo
            hi, lo = torch.where(adv, mid, hi), torch.where(adv, lo, mid)
        shrunk = hi < 1  # hi = 1: no nearer point was adversarial, keep the point itself
        best[idx[shrunk]] = (xo + hi.view(-1, 1, 1, 1) * gap).clamp(0.0, 1.0)[shrunk]
        best_norm[idx[shrunk]] = perturbation_norm(best[idx[shrunk]], xo[shrunk], self.norm)
        return best, best_norm




@ATTACKS.register(help="targeted FAB, once per top-ranked other class (AutoAttack's FAB-T; minimal perturbation)")
class FABT(FAB):
    name = "fab-t"
    targeted = True

    def __init__(self, eps: float | None = None, norm: str = "linf", steps: int = 10, restarts: int = 1,
                 n_target_classes: int = 9, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                 search_steps: int = 10, seed: int | None = 0):
        super().__init__(eps, norm, steps, restarts, alpha_max, eta, beta, search_steps, seed,
                         n_target_classes=n_target_classes)
