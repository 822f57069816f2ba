"""Learning-rate schedules as plain functions of fractional epoch (stateless, so resume is exact)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import EdgeRobustError
from ..registry import Registry

LR_SCHEDULES: Registry = Registry("lr schedule")


@dataclass(frozen=True)
class ScheduleSettings:
    lr: float
    epochs: int
    step_size: int = 10  # step: decay every `step_size` epochs
    gamma: float = 0.1  # step: decay factor
    peak_fraction: float = 0.4  # cyclic: where the triangle peaks (Wong et al. 2020 use 2/5)


@LR_SCHEDULES.register("constant", "fixed learning rate")
def constant(s: ScheduleSettings, t: float) -> float:
    return s.lr


@LR_SCHEDULES.register("step", "multiply by gamma every step_size epochs")
def step(s: ScheduleSettings, t: float) -> float:
    return s.lr * s.gamma ** int(t // s.step_size)


@LR_SCHEDULES.register("cosine", "cosine annealing to zero over the run")
def cosine(s: ScheduleSettings, t: float) -> float:
    return 0.5 * s.lr * (1 + math.cos(math.pi * min(t / s.epochs, 1.0)))


@LR_SCHEDULES.register("cyclic", "one triangular cycle 0 -> lr -> 0 (fast adversarial training)")
def cyclic(s: ScheduleSettings, t: float) -> float:
    frac = min(t / s.epochs, 1.0)
    if frac <= s.peak_fraction:
        return s.lr * frac / s.peak_fraction
    return s.lr * (1 - frac) / (1 - s.peak_fraction)


def learning_rate(name: str, settings: ScheduleSettings, t: float) -> float:
    if settings.epochs < 1:
        raise EdgeRobustError("epochs must be at least 1")
    return LR_SCHEDULES.get(name)(settings, t)
