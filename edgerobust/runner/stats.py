"""The latency statistics every timing figure reports, host and device alike (pure numpy, Python 3.6+).

`edgerobust.bench.timing` imports this module, so a runner's figures and a local `bench` are the same numbers
by construction: percentiles with numpy's linear interpolation, population standard deviation.
"""
import time

import numpy as np

PERCENTILES = (50, 90, 99)
clock_ns = getattr(time, "perf_counter_ns", None) or (lambda: int(time.perf_counter() * 1e9))  # 3.6 has no _ns


def summarize(durations_s):
    """p50/p90/p99 (numpy's linear interpolation), mean, std (population), min, max in ms, and cv = std/mean."""
    if len(durations_s) == 0:
        raise ValueError("no durations to summarise")
    ms = np.asarray(durations_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, PERCENTILES)
    return {"n": int(ms.size), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(ms.mean()), "std_ms": float(ms.std()), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "cv": float(ms.std() / ms.mean()) if ms.mean() > 0 else 0.0}


def throughput(stats, batch):
    """Items per second at the mean latency."""
    return float(batch * 1e3 / stats["mean_ms"]) if stats["mean_ms"] > 0 else None


def time_calls(fn, warmup, repeats, clock=clock_ns):
    """Call `fn` `warmup` times untimed, then `repeats` times timed (clock read twice per call); seconds each."""
    for _ in range(warmup):
        fn()
    durations = []
    for _ in range(repeats):
        start = clock()
        fn()
        durations.append((clock() - start) * 1e-9)
    return durations
