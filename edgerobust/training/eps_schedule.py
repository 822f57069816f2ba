"""ε and attack-step schedules for adversarial training (Marshall: ε rises in stages, steps rise per epoch).

Both are pure functions of the training position, so a resumed run sees exactly the values it would have seen.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..attacks.base import check_eps
from ..errors import EdgeRobustError
from ..registry import Registry

EPS_SCHEDULES: Registry = Registry("ε schedule")


@EPS_SCHEDULES.register("constant", "the full ε from the first step")
def _constant(s: EpsSchedule, frac: float) -> float:
    return s.eps


@EPS_SCHEDULES.register("staged", "ε rises in equal stages (default three, every T/3 epochs; Marshall)")
def _staged(s: EpsSchedule, frac: float) -> float:
    values = s.stage_values()
    return values[min(int(frac * len(values)), len(values) - 1)]


@EPS_SCHEDULES.register("linear", "ε ramps linearly from `start` to ε over `ramp` of training, then stays")
def _linear(s: EpsSchedule, frac: float) -> float:
    return s.start + (s.eps - s.start) * min(frac / s.ramp, 1.0)


@dataclass(frozen=True)
class EpsSchedule:
    """ε as a function of the fractional epoch t, and attack steps as a function of the epoch.

    Steps rise by one per epoch from `min_steps` up to `steps` and fall back to `min_steps` whenever ε rises
    (Marshall); with `min_steps` unset they stay at `steps`.
    """

    eps: float
    kind: str = "constant"
    epochs: int = 1
    stages: int = 3  # staged: number of equal stages
    values: tuple[float, ...] = ()  # staged: explicit ε per stage instead of eps·(i+1)/stages
    start: float = 0.0  # linear: ε at t = 0
    ramp: float = 0.5  # linear: fraction of training over which ε rises
    steps: int = 10
    min_steps: int | None = None

    def __post_init__(self):
        EPS_SCHEDULES.get(self.kind)
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if self.epochs < 1:
            raise EdgeRobustError(f"an ε schedule needs at least one epoch, got {self.epochs}")
        if self.steps < 1:
            raise EdgeRobustError(f"attack steps must be at least 1, got {self.steps}")
        if self.min_steps is not None and not 1 <= self.min_steps <= self.steps:
            raise EdgeRobustError(f"min_steps must be between 1 and steps ({self.steps}), got {self.min_steps}")
        if self.kind == "staged" and not self.values and self.stages < 1:
            raise EdgeRobustError(f"a staged ε schedule needs at least one stage, got {self.stages}")
        if not 0 < self.ramp <= 1:
            raise EdgeRobustError(f"the linear ε ramp must be a fraction of training in (0, 1], got {self.ramp}")
        for value in (self.eps, self.start, *self.values):
            check_eps(value, "linf")
        points = self.stage_values() if self.kind == "staged" else (self.start, self.eps)
        falls = [(a, b) for a, b in zip(points, points[1:], strict=False) if b < a]
        if falls:
            a, b = falls[0]
            raise EdgeRobustError(f"ε schedule decreases ({a:g} -> {b:g}); ε may only stay or rise during training "
                                  "(give stage values in increasing order, or start <= eps)")

    def stage_values(self) -> tuple[float, ...]:
        if self.values:
            return self.values
        return tuple(self.eps * (i + 1) / self.stages for i in range(self.stages))

    @property
    def max_eps(self) -> float:
        return max(self.stage_values()) if self.kind == "staged" else self.eps

    def eps_at(self, t: float) -> float:
        """ε at fractional epoch t (0 <= t <= epochs)."""
        return EPS_SCHEDULES.get(self.kind)(self, min(max(t / self.epochs, 0.0), 1.0))

    def steps_at(self, epoch: int) -> int:
        """Attack steps in (0-based) `epoch`: +1 per epoch since ε last rose, from min_steps, capped at steps."""
        if self.min_steps is None:
            return self.steps
        since = 0
        while since < epoch and not self.eps_at(epoch - since) > self.eps_at(epoch - since - 1):
            since += 1
        return min(self.min_steps + since, self.steps)

    def describe(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
