"""Measurement modes: Marshall's per-image (Alg. 4) and batched-with-loading (Alg. 5), and a latency mode.

- per-image (Alg. 4): images already in memory in the runtime's own form; one image per call; Marshall
  reports the mean over the dataset (we add warm-up and the percentiles).
- batched (Alg. 5): batches of n drawn from the dataset; the timed region includes fetching the batch and
  handing it to the runtime (host-to-device copy on a GPU), as in the thesis; mean per batch.
- latency: one fixed input per batch size, warm-up, repeats, percentiles; throughput = batch / mean latency.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..data import ArrayDataset, iterate_batches
from ..errors import EdgeRobustError
from ..registry import Registry
from .runtimes import Session
from .timing import Clock, TimingPlan, summarize, time_calls

MODES: Registry = Registry("bench mode")


def _result(mode: str, batch: int, plan: TimingPlan, durations: list[float], **extra: Any) -> dict[str, Any]:
    stats = summarize(durations)
    return {"mode": mode, "batch": batch, "warmup": plan.warmup, "repeats": plan.repeats, **stats,
            "per_image_ms": stats["mean_ms"] / batch, "throughput_ips": batch * 1e3 / stats["mean_ms"], **extra}


@MODES.register("latency", "fixed input per batch size: warm-up, repeats, p50/p90/p99, throughput")
def latency_mode(session: Session, data: ArrayDataset, batches: Sequence[int], plan: TimingPlan, *,
                 clock: Clock = time.perf_counter_ns) -> list[dict[str, Any]]:
    results = []
    for batch in batches:
        x = tile_images(data.images.numpy(), batch)
        prepared = session.prepare(x)
        durations = time_calls(lambda p=prepared: session.run(p), plan, clock=clock, before=session.sync)
        results.append(_result("latency", batch, plan, durations))
    return results


@MODES.register("per-image", "Marshall Alg. 4: one in-memory image per call, mean over the dataset")
def per_image_mode(session: Session, data: ArrayDataset, batches: Sequence[int], plan: TimingPlan, *,
                   clock: Clock = time.perf_counter_ns) -> list[dict[str, Any]]:
    images = data.images.numpy()
    count = min(plan.repeats, len(images))
    prepared = [session.prepare(images[i:i + 1]) for i in range(count)]  # "data already in memory"
    cursor = iter(range(10**12))
    durations = time_calls(lambda: session.run(prepared[next(cursor) % count]), TimingPlan(plan.warmup, count),
                           clock=clock, before=session.sync)
    return [_result("per-image", 1, TimingPlan(plan.warmup, count), durations, images=count)]


@MODES.register("batched", "Marshall Alg. 5: batches of n including loading, mean per batch")
def batched_mode(session: Session, data: ArrayDataset, batches: Sequence[int], plan: TimingPlan, *,
                 clock: Clock = time.perf_counter_ns) -> list[dict[str, Any]]:
    results = []
    for batch in batches:
        stream = _cycle(data, batch)

        def load_and_run(stream=stream) -> None:
            x, _ = next(stream)
            session.run(session.prepare(x.numpy()))

        durations = time_calls(load_and_run, plan, clock=clock, before=session.sync)
        results.append(_result("batched", batch, plan, durations, includes_loading=True))
    return results


def run_mode(mode: str, session: Session, data: ArrayDataset, batches: Sequence[int], plan: TimingPlan, *,
             clock: Clock = time.perf_counter_ns) -> list[dict[str, Any]]:
    if not batches or min(batches) < 1:
        raise EdgeRobustError(f"batch sizes must be positive integers, got {list(batches)}")
    return MODES.get(mode)(session, data, batches, plan.validate(), clock=clock)


def tile_images(images: np.ndarray, batch: int) -> np.ndarray:
    """`batch` real images, repeating the dataset if it is smaller."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch] if reps > 1 else images[:batch])


def _cycle(data: ArrayDataset, batch: int) -> Iterator:
    """Full batches of `batch` forever (a short final batch would change what is being timed)."""
    if len(data) < batch:
        data = ArrayDataset(_torch_tile(data, batch), data.labels.repeat(-(-batch // len(data)))[:batch],
                            data.num_classes, data.name, data.split, data.mean, data.std)
    while True:
        yield from iterate_batches(data, batch, drop_last=True)


def _torch_tile(data: ArrayDataset, batch: int):
    import torch

    return torch.from_numpy(tile_images(data.images.numpy(), batch))
