"""This machine's own fp32 GEMM ceiling (GFLOP/s), so a model's speed reads as a fraction of what is possible.

A square n×n matmul costs 2n³ FLOPs; the ceiling is the best rate over a few repeats (the best, not the
mean, because interference from other processes only ever slows a run down). Bench measures it before and
after timing the models and keeps the better, so a burst of load at one moment does not lower it.
"""
from __future__ import annotations

from typing import Any

import torch

from .timing import TimingPlan, time_calls


def _measure(device: str, threads: int, n: int, repeats: int) -> tuple[float, float]:
    saved = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n, device=device, dtype=torch.float32)
        b = torch.randn(n, n, device=device, dtype=torch.float32)

        def matmul() -> None:
            torch.mm(a, b)
            if device == "cuda":
                torch.cuda.synchronize()

        before = torch.cuda.synchronize if device == "cuda" else None
        durations = time_calls(matmul, TimingPlan(warmup=1, repeats=repeats), before=before)
    finally:
        torch.set_num_threads(saved)
    flops = 2.0 * n ** 3
    return flops / min(durations) / 1e9, min(durations)


def gemm_ceiling(device: str = "cpu", threads: int | None = None, n: int | None = None,
                 repeats: int = 10) -> dict[str, Any]:
    """Measured fp32 GEMM rate of this machine (about 0.15 s on 2 CPU cores)."""
    threads = threads or torch.get_num_threads()
    n = n or (1024 if device == "cpu" else 8192)  # 1024³ takes ~50 ms on 2 cores; a GPU needs a bigger one
    tf32 = device == "cuda" and torch.backends.cuda.matmul.allow_tf32
    gflops, best_s = _measure(device, threads, n, repeats)
    return {"gflops": gflops, "device": device, "threads": threads, "n": n, "repeats": repeats,
            "best_seconds": best_s, "dtype": "fp32" + (" (TF32 allowed)" if tf32 else ""),
            "method": f"torch.mm {n}x{n} fp32, best of {repeats}"}


def achieved_gflops(flops_per_image: int, batch: int, latency_s: float) -> float:
    return flops_per_image * batch / latency_s / 1e9 if latency_s > 0 else 0.0
