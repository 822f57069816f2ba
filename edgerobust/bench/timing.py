"""Timing: an injectable clock, warm-up, repeats, and the statistics every latency figure reports.

The statistics (`summarize`) live in the device runner's pure-numpy `runner/stats.py`, so host and device
figures share one definition.

The harness reads the clock twice per call and does nothing else inside the timed region, so its own
cost is two clock reads (see benchmarks/timer_overhead.py).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import EdgeRobustError
from ..runner.stats import PERCENTILES, summarize  # one implementation, shared with the device runner

__all__ = ["PERCENTILES", "Clock", "TimingPlan", "summarize", "time_calls"]

Clock = Callable[[], int]  # monotonic nanoseconds, like time.perf_counter_ns


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
