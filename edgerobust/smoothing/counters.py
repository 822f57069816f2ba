"""Vote counters: the one thing CERTIFY needs from a runtime, `counts(x, rows, phase, n)`, per point and class.

Every counter draws the noise of the runner's protocol (`edgerobust.runner.noise`: a float32 PCG64 stream per
(seed, row, phase)), so at one seed PyTorch, onnxruntime and the device runner see the same noisy samples and their
votes can be compared sample for sample. On the host the noise is drawn on the CPU, on a helper thread while the
runtime computes, and the session's `prepare` moves each batch to the runtime's device (CUDA for torch-cuda and
ort-cuda); the logits come back and the helper counts their votes between draws, so the runtime's thread only
infers. On a device the runner draws the noise and counts the votes there (`DeviceCounter`); only the counts travel.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..runner.noise import DEPTH, PHASES, RULE, fingerprint, noise_batches, prefetched, ring
from . import sound


class VoteCounter(Protocol):
    num_classes: int

    def counts(self, x: np.ndarray, rows: Sequence[int], phase: str, n: int) -> np.ndarray:
        """(len(rows), num_classes) int64 votes: x[i] is the point whose noise stream is keyed by rows[i]."""

    def describe(self) -> dict[str, Any]: ...


HANDOFF_BYTES = 1 << 20  # noise handed from the helper thread to the runtime's at a time (at most HANDOFF_BATCHES)
HANDOFF_BATCHES = 8


def handoff_batches(batch: int, sample_bytes: int) -> int:
    """Batches per hand-over from the helper thread: each hand-over and each of the helper's numpy calls takes
    the GIL, which PyTorch's eager forward needs between its operators, so a small model's batches go over a few
    at a time (measured on the digits model, torch CPU: certify at 0.92 of raw inference one batch at a time, 0.94
    to 0.95 with 4 to 8, 0.97 with 8 and the first chunk ramping up from one batch); a chunk is the stream's next
    samples, so the noise is the same whatever the grouping."""
    return max(1, min(HANDOFF_BATCHES, HANDOFF_BYTES // max(1, batch * sample_bytes)))


def add_votes(votes: np.ndarray, logits: np.ndarray) -> None:
    votes += np.bincount(np.asarray(logits).argmax(1), minlength=len(votes))[:len(votes)]


class SessionCounter:
    """Votes of a host runtime session (bench/runtimes.py: torch-cpu, torch-cuda, ort-cpu, ort-cuda, tensorrt)."""

    def __init__(self, session: Any, num_classes: int, sigma: float, seed: int, batch: int,
                 record: dict[str, Any], noise: str = "gaussian"):
        """`noise`: "gaussian" (the runner's float32 stream) or "sound" (smoothing/sound.py, Voráček & Hein)."""
        self.session, self.num_classes, self.sigma, self.seed, self.batch = session, num_classes, sigma, seed, batch
        self.record, self.noise = record, noise
        self.batches = sound.sound_batches if noise == "sound" else noise_batches

    def counts(self, x: np.ndarray, rows: Sequence[int], phase: str, n: int) -> np.ndarray:
        out = np.zeros((len(rows), self.num_classes), dtype=np.int64)
        batch = self.batch
        group = batch * handoff_batches(batch, int(np.prod(x.shape[1:])) * 4)
        buffers = ring(DEPTH)  # the chunks are written into these arrays in turn: nothing is allocated per chunk
        inferred: deque[tuple[int, np.ndarray]] = deque()  # logits not counted yet (append/popleft are atomic)

        def count():
            while inferred:
                i, logits = inferred.popleft()
                add_votes(out[i], logits)

        def stream():  # every point's chunks in one stream: the helper draws the next point's while this one ends
            for i, row in enumerate(rows):  # a chunk of `group` samples is the next `group` of the stream
                for noisy in self.batches(x[i], self.sigma, n, group, self.seed, row, PHASES[phase], buffers,
                                          first=batch if i == 0 else None):  # the runtime starts after one batch
                    count()  # the helper counts the votes too, so the runtime's thread only infers
                    yield i, noisy

        chunks = prefetched(stream(), DEPTH)
        try:
            for i, noisy in chunks:  # this chunk's array is not written again before the next is taken
                for start in range(0, len(noisy), batch):
                    inferred.append((i, self.session.infer(noisy[start:start + batch])))
        finally:
            chunks.close()  # the helper has ended: what it left uncounted is counted here
        count()
        return out

    def slack(self, x: np.ndarray) -> tuple[float, float]:
        """What a point's certificate gives up for soundness (nothing under Gaussian noise, which assumes exact
        arithmetic)."""
        return sound.slack(x, self.sigma) if self.noise == "sound" else (0.0, 0.0)

    def describe(self) -> dict[str, Any]:
        return {**self.record, "noise": sound.RULE if self.noise == "sound" else RULE, "numpy": np.__version__}


class DeviceCounter:
    """Votes counted on a device by the runner's `smooth` command over one set file sent there (rows = its rows)."""

    def __init__(self, session: Any, set_path: str, num_classes: int, sigma: float, seed: int, batch: int,
                 runtime: str, precision: str, threads: int, thresholds_path: str | None = None):
        """`thresholds_path`: the sound noise's thresholds sent to the device (None: Gaussian noise)."""
        self.session, self.set_path, self.num_classes = session, set_path, num_classes
        self.thresholds_path = thresholds_path
        self.sigma, self.seed, self.batch = sigma, seed, batch
        self.runtime, self.precision, self.threads = runtime, precision, threads
        self.last: dict[str, Any] = {}
        self.same_stream: dict[tuple[int, str], bool] = {}
        self.bundle: str | None = None
        self.hashed = False  # the runner checked the bundle's sha256 list once in this counter's calls

    def counts(self, x: np.ndarray, rows: Sequence[int], phase: str, n: int) -> np.ndarray:
        rows = list(rows)
        if rows != list(range(rows[0], rows[0] + len(rows))):
            raise ValueError("a device counts a contiguous range of rows")
        result = self.session.call(
            "smooth", "--sigma", repr(float(self.sigma)), "--n", str(n), "--seed", str(self.seed), "--phase", phase,
            "--precision", self.precision, "--runtime", self.runtime, "--threads", str(self.threads),
            "--batch", str(self.batch), "--set", self.set_path, "--start", str(rows[0]), "--count", str(len(rows)),
            *(["--noise", "sound", "--thresholds", self.thresholds_path] if self.thresholds_path else []),
            *(["--no-hash"] if self.hashed else []))  # hashing every file again per call costs the device seconds
        self.hashed = True
        self.last = result
        out = np.zeros((len(rows), self.num_classes), dtype=np.int64)
        for i, point in enumerate(result["points"]):
            got = np.asarray(point["counts"], dtype=np.int64)[:self.num_classes]
            out[i, :len(got)] = got
            mine = fingerprint(x[i], self.sigma, self.seed, rows[i], PHASES[phase], thresholds=self.thresholds())
            self.same_stream[(rows[i], phase)] = point.get("fingerprint") == mine
        return out

    def thresholds(self) -> np.ndarray | None:
        return sound.discrete_gaussian(float(self.sigma)).thresholds if self.thresholds_path else None

    def slack(self, x: np.ndarray) -> tuple[float, float]:
        return sound.slack(x, self.sigma) if self.thresholds_path else (0.0, 0.0)

    def describe(self) -> dict[str, Any]:
        last = self.last
        return {"runtime": (last.get("runtime") or {}).get("name", self.runtime), "runtime_detail": last.get("runtime"),
                "precision": self.precision, "artifact": last.get("artifact"), "machine": last.get("machine"),
                "architecture": (last.get("machine") or {}).get("architecture"),
                "artifact_sha256": (last.get("artifact") or {}).get("sha256"), "noise": last.get("noise", RULE),
                "numpy": last.get("numpy"), "where": "device", "bundle": self.bundle}


def write_points(path: Path, x: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> Path:
    """The points as the runner's set format (x_adv float32, labels, indices), for the device to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_adv=np.ascontiguousarray(x, np.float32), labels=np.asarray(labels, np.int64),
             indices=np.asarray(indices, np.int64))
    return path
