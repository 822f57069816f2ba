"""Training losses for randomized smoothing (Song's thesis, ch. 3): Gaussian augmentation, consistency
regularisation (Jeong & Shin 2020), MACER (Zhai et al. 2020) and Song's generalized consistency.

Every loss sees m noisy copies x + ε_i, ε_i ~ N(0, σ²I) in [0,1] pixels (the certificate's noise; not clipped),
drawn on the input's device from torch's global generator of that device, which the loop seeds and checkpoints, so
a resumed run repeats the uninterrupted one. Under DDP each rank draws the noise of its own shard.
Settings (the thesis leaves λ, η, β open): σ, m, λ (consistency weight / MACER's robustness weight), η (entropy
weight), β (MACER's inverse temperature), γ (MACER's hinge), and MACER's threshold on ĝ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import EdgeRobustError
from .losses import LOSSES, LossOutput, StepState


def noisy_copies(x: torch.Tensor, sigma: float, m: int) -> torch.Tensor:
    """(m·B, C, H, W): m Gaussian copies of the batch, copy-major, on x's device and dtype."""
    return x.repeat(m, 1, 1, 1) + sigma * torch.randn((m * len(x), *x.shape[1:]), device=x.device, dtype=x.dtype)


def inverse_normal_cdf(g: torch.Tensor, threshold: float = 0.99) -> torch.Tensor:
    """Φ⁻¹(g) with g clamped into [1 − threshold, threshold]: the gradient, √(2π)·exp(Φ⁻¹(g)²/2) (no σ² in it:
    Song's eq. 3.4 has a spurious one), blows up as g → 1; beyond the threshold it is zero instead."""
    return torch.special.ndtri(g.clamp(1 - threshold, threshold))


def _check(name: str, sigma: float, m: int, **weights: float) -> None:
    if not sigma > 0:
        raise EdgeRobustError(f"{name}: σ must be greater than 0, got {sigma}")
    if m < 1:
        raise EdgeRobustError(f"{name}: m (noise samples per input) must be at least 1, got {m}")
    for key, value in weights.items():
        if value < 0:
            raise EdgeRobustError(f"{name}: {key} must be at least 0, got {value}")


class SmoothingLoss:
    name = "smoothing"

    def __init__(self, sigma: float = 0.25, m: int = 1):
        self.sigma, self.m = float(sigma), int(m)
        _check(self.name, self.sigma, self.m)

    def logits(self, model, x) -> torch.Tensor:
        """(m, B, classes) logits of the m noisy copies."""
        return model(noisy_copies(x, self.sigma, self.m)).view(self.m, len(x), -1)

    def describe(self) -> dict:
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


@LOSSES.register("gaussian", "Gaussian augmentation (Cohen et al.): CE on x + ε, ε ~ N(0, σ²I), m copies")
class GaussianAugmentation(SmoothingLoss):
    name = "gaussian"

    def __call__(self, model, x, y, state: StepState) -> LossOutput:
        logits = self.logits(model, x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(self.m))
        return LossOutput(loss, logits[0])


@LOSSES.register("consistency", "consistency (Jeong & Shin): mean CE(x+ε_i) + λ·KL(F̂ ‖ F_i) + η·H(F̂), m copies")
class Consistency(SmoothingLoss):
    name = "consistency"

    def __init__(self, sigma: float = 0.25, m: int = 2, lam: float = 10.0, eta: float = 0.5):
        super().__init__(sigma, m)
        self.lam, self.eta = float(lam), float(eta)
        _check(self.name, self.sigma, self.m, lam=self.lam, eta=self.eta)

    def terms(self, logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """λ·mean_i KL(F̂ ‖ F_i) + η·H(F̂), per input masked by `mask` (all inputs when None)."""
        log_p = F.log_softmax(logits, dim=-1)  # (m, B, K)
        mean = log_p.exp().mean(0)  # F̂
        log_mean = mean.clamp_min(1e-12).log()
        kl = (mean * (log_mean - log_p)).sum(-1).mean(0)  # per input
        entropy = -(mean * log_mean).sum(-1)
        per_input = self.lam * kl + self.eta * entropy
        if mask is not None:
            per_input = per_input * mask
        return per_input.mean()

    def __call__(self, model, x, y, state: StepState) -> LossOutput:
        logits = self.logits(model, x)
        ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(self.m))
        return LossOutput(ce + self.terms(logits, y), logits.mean(0))


@LOSSES.register("gen-consistency", "Song's generalized consistency: CE on the averaged logits + the consistency "
                                    "terms only where the average prediction is correct")
class GeneralizedConsistency(Consistency):
    name = "gen-consistency"

    def __call__(self, model, x, y, state: StepState) -> LossOutput:
        logits = self.logits(model, x)
        averaged = logits.mean(0)
        ce = F.cross_entropy(averaged, y)
        correct = (averaged.argmax(-1) == y).to(logits.dtype).detach()
        return LossOutput(ce + self.terms(logits, y, correct), averaged,
                          {"consistent_fraction": float(correct.mean().item())})


@LOSSES.register("macer", "MACER (Zhai et al.): −log ĝ_y + λ·σ/2·hinge(γ − (Φ⁻¹(ĝ_y) − Φ⁻¹(ĝ_2nd))) on correct points")
class MACER(SmoothingLoss):
    name = "macer"

    def __init__(self, sigma: float = 0.25, m: int = 8, lam: float = 12.0, beta: float = 16.0, gamma: float = 8.0,
                 threshold: float = 0.99):
        super().__init__(sigma, m)
        self.lam, self.beta, self.gamma, self.threshold = float(lam), float(beta), float(gamma), float(threshold)
        _check(self.name, self.sigma, self.m, lam=self.lam, beta=self.beta, gamma=self.gamma)
        if not 0.5 < self.threshold < 1:
            raise EdgeRobustError(f"macer: the threshold on ĝ must be in (0.5, 1), got {self.threshold}")

    def __call__(self, model, x, y, state: StepState) -> LossOutput:
        logits = self.logits(model, x)
        g = F.softmax(self.beta * logits, dim=-1).mean(0)  # the soft smoothed classifier ĝ
        classification = F.nll_loss(g.clamp_min(1e-12).log(), y)
        top2 = g.topk(2, dim=-1)
        correct = top2.indices[:, 0] == y
        if not correct.any():
            return LossOutput(classification, logits.mean(0), {"macer_radius": 0.0})
        g_y = g[correct].gather(1, y[correct][:, None]).squeeze(1)
        g_2 = top2.values[correct, 1]  # the runner-up: the top class is y on these points
        radius = self.sigma / 2 * (inverse_normal_cdf(g_y, self.threshold) - inverse_normal_cdf(g_2, self.threshold))
        hinge = (self.gamma * self.sigma / 2 - radius).clamp_min(0)  # γ is in units of σ/2, as Zhai et al.'s
        robustness = self.lam * hinge.sum() / len(y)
        return LossOutput(classification + robustness, logits.mean(0),
                          {"macer_radius": float(radius.mean().item())})
