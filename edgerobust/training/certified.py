"""Certified training losses: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020), on the bound engine.

Both minimise cross-entropy on the worst-case logits over the L∞ ball: z_j = -m_j with m_j a lower bound of
y_label - y_j (m_label = 0), so CE(z, y) >= CE(f(x), y) for every model (the worst case is never better than the
clean point). The loss mixes it with clean cross-entropy, (1 - w·r)·CE(f(x), y) + w·r·CE(z, y), where
r = ε_t / ε follows the ε schedule: Barmpas (ch. 7, Wong & Kolter's robust training) ramps ε linearly from
0.001 to 0.01 over the first half of training; Gowal et al. end with the robust weight at 0.5 (w here).
CROWN-IBP bounds the margins with one CROWN backward pass from the logits over IBP's intermediate bounds and mixes
it with IBP's, β·CROWN-IBP + (1 - β)·IBP with β = 1 - r falling to 0 as ε reaches its target (Zhang et al.).

The bounds come from the same rules that certify the exported artifact (edgerobust/bounds), over the live model
(`bounds.torch_graph.from_module`): sequential ReLU networks (Barmpas's teachers, scnn2, mlp, lenet-like chains).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..bounds import Ball, BoundError, Engine
from ..bounds.torch_graph import from_module
from ..errors import EdgeRobustError
from .distributed import unwrap
from .eps_schedule import EpsSchedule
from .losses import LOSSES, LossOutput, StepState


def worst_logits(margins: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-m with the label's own column at 0: the logits of the worst case the bound allows."""
    return -margins.scatter(1, y.unsqueeze(1), 0.0)


def ibp_margins(engine: Engine, ball: Ball, y: torch.Tensor, table) -> torch.Tensor:
    lo, hi = table[engine.graph.output]
    return lo.gather(1, y.unsqueeze(1)) - hi


def crown_margins(engine: Engine, ball: Ball, y: torch.Tensor, table) -> torch.Tensor:
    """CROWN's lower bounds of y_label - y_j from the logits back to the input, over the given intermediate bounds."""
    lo = table[engine.graph.output][0]
    B, K = lo.shape
    eye = torch.eye(K, dtype=lo.dtype, device=lo.device)
    C = eye[y].unsqueeze(0) - eye.unsqueeze(1)  # [K, B, K]: spec j is e_label - e_j
    return ball.lower(*engine.backward(engine.graph.output, C, table)).T


class _Certified:
    """Shared settings: ε schedule (default linear from 0.001 over the first half, Barmpas), final robust weight."""

    def __init__(self, eps: float = 0.01, weight: float = 0.5, schedule: str = "linear", *, epochs: int = 1,
                 start: float = 0.001, ramp: float = 0.5, stages: int = 3, values: tuple[float, ...] = ()):
        start = min(start, float(eps))
        self.schedule = EpsSchedule(float(eps), schedule, epochs=epochs, start=start, ramp=ramp, stages=stages,
                                    values=tuple(values))
        self.weight = float(weight)
        if not 0 <= self.weight <= 1:
            raise EdgeRobustError(f"{self.name}: the robust weight w must be in [0, 1], got {self.weight}")
        self._engines: dict[int, Engine] = {}

    def engine(self, model, input_shape=None) -> Engine:
        model = unwrap(model)
        if id(model) not in self._engines:  # the graph holds the live parameters: built once per model
            try:
                self._engines[id(model)] = Engine(from_module(model, input_shape), "certified-training")
            except BoundError as exc:
                raise BoundError(f"--loss {self.name}: {exc}") from None
        return self._engines[id(model)]

    def margins(self, engine: Engine, ball: Ball, y: torch.Tensor, r: float) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model, x, y, state: StepState) -> LossOutput:
        eps = self.schedule.eps_at(state.progress)
        r = eps / self.schedule.max_eps if self.schedule.max_eps > 0 else 1.0
        logits = model(x)
        clean = F.cross_entropy(logits, y)
        engine = self.engine(model, tuple(x.shape[1:]))
        ball = Ball(x, eps)
        margins = self.margins(engine, ball, y, r)
        robust = F.cross_entropy(worst_logits(margins, y), y)
        w = self.weight * r
        certified = (margins.scatter(1, y.unsqueeze(1), float("inf")).min(1).values > 0).float().mean().item()
        return LossOutput((1 - w) * clean + w * robust, logits,
                          {"train_robust_loss": robust.item(), "train_certified": certified, "eps": eps})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "schedule": self.schedule.describe()}


@LOSSES.register(help="IBP certified training (Gowal et al. 2018): CE on interval-bound worst-case logits, ε ramp")
class IBPLoss(_Certified):
    name = "ibp"

    def margins(self, engine, ball, y, r):
        return ibp_margins(engine, ball, y, engine.bounds(ball, "ibp"))


@LOSSES.register(help="CROWN-IBP certified training (Zhang et al. 2020): β·CROWN-IBP + (1 − β)·IBP, β 1 → 0")
class CrownIBPLoss(_Certified):
    name = "crown-ibp"

    def margins(self, engine, ball, y, r):
        table = engine.bounds(ball, "ibp")
        ibp = ibp_margins(engine, ball, y, table)
        beta = 1.0 - r
        if beta <= 0:
            return ibp
        return beta * crown_margins(engine, ball, y, table) + (1 - beta) * ibp
