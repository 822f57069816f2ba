"""Timing: an injectable clock, warm-up, repeats, and the statistics every latency figure reports.

The harness reads the clock twice per call and does nothing else inside the timed region, so its own
cost is two clock reads (see benchmarks/timer_overhead.py).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import EdgeRobustError

Clock = Callable[[], int]  # monotonic nanoseconds, like time.perf_counter_ns
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class TimingPlan:
    warmup: int = 10
    repeats: int = 50

    def validate(self) -> TimingPlan:
        if self.warmup < 0:
            raise EdgeRobustError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.repeats < 1:
            raise EdgeRobustError(f"--repeats must be at least 1, got {self.repeats}")
        return self


def time_calls(fn: Callable[[], object], plan: TimingPlan, *, clock: Clock = time.perf_counter_ns,
               before: Callable[[], object] | None = None) -> list[float]:
    """Call `fn` plan.warmup times untimed, then plan.repeats times timed; return each duration in seconds.

    `before` runs outside the timed region before every call (e.g. to synchronise a GPU so earlier work
    does not leak into the measurement); `fn` itself must finish its work (synchronise) before returning.
    """
    plan.validate()
    for _ in range(plan.warmup):
        if before is not None:
            before()
        fn()
    durations = []
    for _ in range(plan.repeats):
        if before is not None:
            before()
        start = clock()
        fn()
        durations.append((clock() - start) * 1e-9)
    return durations


def summarize(durations_s: Sequence[float]) -> dict[str, float | int]:
    """p50/p90/p99 (numpy's linear interpolation), mean, std (population), min, max, all in milliseconds."""
    if len(durations_s) == 0:
        raise ValueError("no durations to summarise")
    ms = np.asarray(durations_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, PERCENTILES)
    return {"n": int(ms.size), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(ms.mean()), "std_ms": float(ms.std()), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "cv": float(ms.std() / ms.mean()) if ms.mean() > 0 else 0.0}
