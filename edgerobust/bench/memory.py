"""Peak memory while a model runs: host RSS sampled in a thread, GPU memory from the CUDA allocator.

RSS is sampled with psutil every `interval_s` in a background thread (getrusage's ru_maxrss is the peak over
the whole process life and cannot be reset, so a delta of it misses everything below an earlier peak). The
sampler competes for the CPU, so memory is measured in its own short pass, never while latency is timed.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psutil
import torch


class PeakRSS:
    """Context manager: `peak_bytes` and `baseline_bytes` of this process's RSS while the block ran."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.baseline_bytes = self.peak_bytes = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self.baseline_bytes = self.peak_bytes = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)


def measure_memory(run_once: Callable[[], object], calls: int = 3, device: str = "cpu") -> dict[str, Any]:
    """Run `run_once` a few times under the RSS sampler (and the CUDA peak counter on GPU)."""
    on_gpu = device == "cuda" and torch.cuda.is_available()
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        free_before, total = torch.cuda.mem_get_info()
    with PeakRSS() as rss:
        for _ in range(calls):
            run_once()
    result: dict[str, Any] = {"peak_rss_bytes": rss.peak_bytes, "rss_before_bytes": rss.baseline_bytes,
                              "rss_increase_bytes": rss.peak_bytes - rss.baseline_bytes,
                              "rss_method": f"psutil RSS sampled every {rss.interval_s * 1e3:g} ms in a thread"}
    if on_gpu:
        torch.cuda.synchronize()
        free_after, _ = torch.cuda.mem_get_info()
        # torch's allocator sees only torch tensors; the device-wide figure also covers onnxruntime / TensorRT
        result.update({"gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
                       "gpu_used_bytes": total - free_after, "gpu_used_increase_bytes": free_before - free_after,
                       "gpu_method": "torch.cuda.max_memory_allocated (torch tensors) and cudaMemGetInfo (device)"})
    return result
