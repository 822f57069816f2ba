"""DeepFool (Moosavi-Dezfooli et al. 2016): step to the nearest linearised decision boundary until the label
flips. Exact in one step for a linear classifier; for L∞ the step uses the dual (L1) norm of the gradient gap."""
from __future__ import annotations

import torch

from ..errors import EdgeRobustError
from .base import ATTACKS, MinimalAttack, checked_logits


@ATTACKS.register(help="DeepFool: iterate to the nearest linearised boundary (minimal perturbation)")
class DeepFool(MinimalAttack):
    def __init__(self, eps: float | None = None, norm: str = "l2", steps: int = 50, overshoot: float = 0.02,
                 candidates: int = 10):
        if steps < 1 or candidates < 2 or overshoot < 0:
            raise EdgeRobustError("deepfool needs steps ≥ 1, candidates ≥ 2 and overshoot ≥ 0")
        super().__init__(eps, norm, steps=int(steps), overshoot=float(overshoot), candidates=int(candidates))
        self.steps, self.overshoot, self.candidates = int(steps), float(overshoot), int(candidates)

    def perturb(self, model, x, y):
        n = len(x)
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        active = torch.arange(n, device=x.device)
        for _ in range(self.steps):
            xa = x_adv[active].clone().requires_grad_(True)
            logits = checked_logits(model, xa, y[active])
            keep = logits.argmax(1) == y[active]  # points already flipped stop here
            if not keep.any():
                break
            ya, z = y[active][keep], logits[keep]
            k = min(self.candidates, z.shape[1])
            ranked = z.detach().argsort(dim=1, descending=True)[:, :k]
            grad_y = torch.autograd.grad(z.gather(1, ya[:, None]).sum(), xa, retain_graph=True)[0][keep]
            z_y = z.detach().gather(1, ya[:, None]).squeeze(1)
            best_dist = torch.full((len(ya),), float("inf"), device=x.device, dtype=x.dtype)
            best_step = torch.zeros_like(grad_y)
            for j in range(k):
                cls = ranked[:, j]
                grad_k = torch.autograd.grad(z.gather(1, cls[:, None]).sum(), xa, retain_graph=j < k - 1)[0][keep]
                w = grad_k - grad_y
                f = (z.detach().gather(1, cls[:, None]).squeeze(1) - z_y).abs()
                dual = (w.flatten(1).norm(dim=1) if self.norm == "l2" else w.flatten(1).abs().sum(1)).clamp_min(1e-12)
                dist = torch.where(cls == ya, torch.full_like(f, float("inf")), f / dual)
                better = dist < best_dist
                direction = w / dual.view(-1, 1, 1, 1) if self.norm == "l2" else w.sign()
                step = ((f + 1e-4) / dual).view(-1, 1, 1, 1) * direction
                best_step[better], best_dist[better] = step[better], dist[better]
            active = active[keep]
            r_total[active] += best_step
            x_adv[active] = (x[active] + (1 + self.overshoot) * r_total[active]).clamp(0, 1)
        return x_adv
