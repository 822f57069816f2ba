"""ADMM pruning as a Callback of the one training loop (scaled form, per Ye et al. 2019 and Marshall).

    z ← Π_S(θ + u)                       every `interval` epochs
    θ ← SGD step on loss + ρ/2‖θ − z + u‖² every step (Callback.penalty)
    u ← u + θ − z                        with the z update; then ρ ← ρ · growth
    u ← u · ρ_old / ρ_new                (dual_rescale, the default)

The scaled dual is u = y/ρ (Boyd et al. 2011, "Distributed Optimization and Statistical Learning via the Alternating
Direction Method of Multipliers", §3.1.1), so when ρ changes u must be rescaled to keep the dual y itself (§3.4.1:
"if ρ is halved, u should be doubled"). Without it the implied dual ρ·u grows with ρ at every update; that older form
is kept as `dual_rescale=False` for comparison (benchmarks/compression.py tradeoff).

With a keep schedule the constraint set S tightens over training (Marshall's monotonically decreasing k): the
projection at fractional epoch t keeps 1 − (1 − keep)·f(t), f being an ε-schedule shape (constant, linear,
staged) rising from 0 to 1, so that the last updates project onto the target keep ratio.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import EdgeRobustError
from ..training.distributed import unwrap
from ..training.eps_schedule import EPS_SCHEDULES, EpsSchedule
from ..training.loop import Callback
from .schemes import PruningPlan


class ADMMCallback(Callback):
    def __init__(self, plan: PruningPlan, rho: float = 1e-3, rho_growth: float = 1.3, interval: int = 1,
                 keep_schedule: EpsSchedule | None = None, dual_rescale: bool = True):
        if not rho > 0:
            raise EdgeRobustError(f"ADMM ρ must be positive, got {rho}")
        if not rho_growth >= 1:
            raise EdgeRobustError(f"ADMM ρ growth factor must be at least 1, got {rho_growth}")
        if interval < 1:
            raise EdgeRobustError(f"ADMM update interval must be at least 1 epoch, got {interval}")
        self.plan = plan
        self.keep_schedule = keep_schedule
        self.rho, self.rho_growth, self.interval = float(rho), float(rho_growth), int(interval)
        self.dual_rescale = bool(dual_rescale)
        self.z: dict[str, Tensor] | None = None
        self.u: dict[str, Tensor] = {}
        self.updates = 0
        self._params: dict[str, torch.nn.Parameter] = {}

    def on_train_start(self, trainer) -> None:
        params = dict(unwrap(trainer.model).named_parameters())
        self._params = {name: params[name] for name in self.plan.scored_params()}
        if self.z is None:  # a fresh run (resume restores z, u and ρ from the checkpoint instead)
            theta = self._theta()
            self.z = self.plan_at(0.0).project(theta)
            self.u = {name: torch.zeros_like(value) for name, value in theta.items()}
        else:  # restored from a checkpoint (loaded onto the CPU): z and u go where their parameters are
            self.z = {name: z.to(self._params[name]) for name, z in self.z.items()}
            self.u = {name: u.to(self._params[name]) for name, u in self.u.items()}

    def _theta(self) -> dict[str, Tensor]:
        return {name: p.detach().clone() for name, p in self._params.items()}

    def penalty(self, trainer) -> Tensor:
        terms = [(p - self.z[name] + self.u[name]).pow(2).sum() for name, p in self._params.items()]
        return 0.5 * self.rho * torch.stack(terms).sum()

    def plan_at(self, t: float) -> PruningPlan:
        """The constraint set at fractional epoch t: the plan itself unless a keep schedule relaxes it."""
        return self.plan if self.keep_schedule is None else self.plan.relaxed(self.keep_schedule.eps_at(t))

    @torch.no_grad()
    def update(self, t: float | None = None) -> float:
        """One z / u update at fractional epoch t (default: the end of the schedule); returns the relative primal
        residual ‖θ − z‖ / ‖θ‖ after it."""
        theta = self._theta()
        plan = self.plan if t is None else self.plan_at(t)
        self.z = plan.project({name: theta[name] + self.u[name] for name in theta})
        for name in theta:
            self.u[name] += theta[name] - self.z[name]
        rho_old, self.rho = self.rho, self.rho * self.rho_growth
        if self.dual_rescale and self.rho != rho_old:  # keep y = ρ·u unchanged (Boyd et al. §3.4.1)
            for name in self.u:
                self.u[name] *= rho_old / self.rho
        self.updates += 1
        return self.residual(theta)

    def residual(self, theta: dict[str, Tensor] | None = None) -> float:
        theta = theta or self._theta()
        diff = sum(float((theta[n] - self.z[n]).pow(2).sum()) for n in theta)
        norm = sum(float(theta[n].pow(2).sum()) for n in theta)
        return (diff / norm) ** 0.5 if norm else 0.0

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        metrics["admm_rho"] = self.rho
        if (epoch + 1) % self.interval == 0:
            metrics["admm_residual"] = self.update(epoch + 1)
            metrics["admm_keep"] = self.plan_at(epoch + 1).mean_keep()
        else:
            metrics["admm_residual"] = self.residual()

    def state_dict(self) -> dict[str, Any]:
        return {"z": self.z or {}, "u": self.u, "rho": self.rho, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("z"):
            self.z, self.u = dict(state["z"]), dict(state["u"])
            self.rho, self.updates = float(state["rho"]), int(state["updates"])

    def describe(self) -> dict[str, Any]:
        return {"rho": self.rho, "rho_growth": self.rho_growth, "interval": self.interval, "updates": self.updates,
                "dual_rescale": self.dual_rescale,
                "keep_schedule": None if self.keep_schedule is None else self.keep_schedule.describe()}


def keep_schedule(kind: str, epochs: int, *, ramp: float = 1.0, stages: int = 3) -> EpsSchedule | None:
    """The shape of a falling keep ratio over `epochs` of ADMM (None for a constant keep ratio)."""
    if kind not in EPS_SCHEDULES:
        raise EdgeRobustError(f"unknown keep schedule '{kind}'; valid keep schedules: {', '.join(EPS_SCHEDULES)}")
    if kind == "constant":
        return None
    # an ε schedule of maximum 1 from 0 is exactly the fraction of the way to the target keep ratio
    return EpsSchedule(1.0, kind, epochs=epochs, stages=stages, ramp=ramp)
