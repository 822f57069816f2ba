"""`smooth_run`: certify a run's Gaussian-smoothed classifier on a host runtime or on a device, into smoothing.json.

Song's thesis (ch. 2, 5) and Cohen et al. 2019: CERTIFY on the first `points` test points (rows `start` onwards),
for each σ of the grid. On the host the runtime is one of bench's (`torch-cpu`, `torch-cuda`, `ort-cpu`,
`ort-cuda`, `tensorrt`): PyTorch runs the run's own weights, onnxruntime the exported artifact of the precision
asked. With `device` ([device]), the device's runner draws the noise and counts the votes on the deployed
artifact; the host computes the statistics from those counts, so a device certificate is for the artifact and
arithmetic that ran.

Shards: `start`/`count` (or torchrun's RANK/WORLD_SIZE, which split the rows of one call) compute part of the rows;
every shard merges its points by row into the one entry of its settings in RUN/smoothing.json, under the run's lock.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..claim import locked
from ..config import DeviceConfig, SmoothConfig, build, grid_values
from ..errors import EdgeRobustError
from ..io import read_json, sha256_file, write_json
from ..progress import progress_bar
from ..run import RunDir
from .agreement import EXACT_MAX, compare_entries, exact_brackets, near_boundary_limits
from .certify import certify_points, summarize
from .counters import DeviceCounter, SessionCounter, VoteCounter, write_points
from .sound import discrete_gaussian

if TYPE_CHECKING:
    from ..remote.session import DeviceSession

SMOOTHING_FILE = "smoothing.json"
_MERGE = threading.Lock()  # the run's flock is re-entrant within a process: threads (fleet shards) take this too
FORMAT = "edgerobust-smoothing-1"
ASSUMPTIONS = (
    "The certificate is Cohen et al.'s: it holds for the smoothed classifier of the base classifier as computed, with "
    "Gaussian noise N(0, σ²I) added in [0,1] pixel space (normalisation is inside the model) and the noisy input not "
    "clipped to [0,1]; it fails with probability at most α per point. It assumes exact real arithmetic: the noise is "
    "drawn in float32 (PCG64, ziggurat) and x + ε is rounded to float32, so the sampled distribution is only close to "
    "the Gaussian, and Voráček & Hein (arXiv 2207.07209) show that a base classifier can exploit that rounding to "
    "obtain false certificates. Their sound remedy is `--noise sound`; without it these certificates "
    "are sound only for base classifiers that do not depend on the last bits of their input; a device certificate "
    "is computed from the device's own votes for the artifact and precision that ran.")
SOUND_ASSUMPTIONS = (
    "Sound in floating point (Voráček & Hein, arXiv 2207.07209): the certificate is Cohen et al.'s for the base "
    "classifier f∘R, R rounding its input to the 1/255 grid (the model sees float32(k)/255 for integers k, computed "
    "in whatever arithmetic the runtime uses), smoothed with real Gaussian noise N(0, σ²I) in [0,1] pixel space, not "
    "clipped. The noise is the Gaussian rounded to the grid, drawn exactly from 60-bit uniform integers; p_A's lower "
    "bound gives up the sampler's total variation to it (d × about 1e-15), PREDICT tests at α less n times that, and "
    "an input off the grid gives up its L2 distance to the grid point certified. It assumes the random bits are fair "
    "coins (PCG64 stands in for them) and that the runtime returns the same class for the same input whatever else "
    "is in its batch; each certificate fails with probability at most α.")


class SmoothingError(EdgeRobustError):
    """Bad smoothing input: a runtime that cannot run here, a precision the artifact lacks, shards that disagree."""


def smooth_config(config: SmoothConfig | None = None, **overrides: Any) -> SmoothConfig:
    return build(SmoothConfig, {}, "[smooth]", overrides=overrides, base=config)


def entry_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def points_of(run: RunDir, config: SmoothConfig) -> tuple[np.ndarray, np.ndarray, range]:
    """The first `points` test points (as float32 pixels) with labels, and the rows this call certifies."""
    from ..evaluation.api import test_data

    test = test_data(run, config.points)
    stop = len(test) if config.count is None else min(len(test), config.start + config.count)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    rows = range(config.start, stop)
    if world > 1:  # torchrun: contiguous equal shares of this call's rows
        share = -(-len(rows) // world)
        rows = rows[rank * share:(rank + 1) * share]
    return test.images.numpy().astype(np.float32), test.labels.numpy().astype(np.int64), rows


def _onnx_models(bundle: Path) -> dict[str, Path]:
    from ..export.bundle import read_manifest, verify_bundle

    verify_bundle(bundle)
    manifest = read_manifest(bundle)
    return {p: bundle / e["file"] for p, e in (manifest.get("models") or {}).items()
            if isinstance(e, dict) and e.get("file") and str(e["file"]).endswith(".onnx")}


def check_runtime(config: SmoothConfig) -> None:
    """The host runtime of `config` runs here at its precision (one line why not)."""
    from ..bench.runtimes import RUNTIMES, require_runtime

    if config.runtime not in RUNTIMES:
        raise SmoothingError(f"--runtime {config.runtime} is not a host runtime; choose one of "
                             f"{', '.join(RUNTIMES.names())} (or pass --host for a device)")
    require_runtime(config.runtime, config.precision)


@contextlib.contextmanager
def host_counter(run: RunDir, config: SmoothConfig, sigma: float, artifact: str | Path | None = None,
                 device: str | None = None) -> Iterator[VoteCounter]:
    """A counter on one of bench's runtimes here (refused, in one line, when it cannot run here)."""
    from ..bench.runtimes import BenchModel, require_runtime
    from ..run_select import bundle_of

    check_runtime(config)
    runtime = require_runtime(config.runtime, config.precision)
    onnx: dict[str, Path] = {}
    artifact_sha = run.manifest.get("weights_sha256")
    artifact_file = "model.pt"
    if runtime.spec.input != "torch":
        bundle = Path(artifact) if artifact is not None else bundle_of(run)
        onnx = _onnx_models(bundle)
        if config.precision not in onnx:
            raise SmoothingError(f"bundle {bundle} has no {config.precision} ONNX model (has "
                                 f"{', '.join(sorted(onnx)) or 'none'}); export with that precision")
        artifact_file = str(onnx[config.precision])
        artifact_sha = sha256_file(onnx[config.precision])
    model = BenchModel(str(run.manifest["model"]["spec"]), run.load_model(), run.input_shape, onnx)
    threads = config.threads
    if not threads and runtime.spec.input == "torch":  # PyTorch takes a positive count; 0 means its own default
        import torch

        threads = torch.get_num_threads()
    session = runtime.load(model, config.precision, threads, config.batch)
    record = {"runtime": runtime.name, "runtime_version": runtime.version(), "precision": config.precision,
              "architecture": platform.machine(), "artifact_file": artifact_file, "artifact_sha256": artifact_sha,
              "device": runtime.device, "where": "host", "threads": threads}
    try:
        yield SessionCounter(session, run.num_classes, sigma, config.seed, config.batch, record, config.noise)
    finally:
        session.close()


@contextlib.contextmanager
def device_counter(run: RunDir, config: SmoothConfig, sigma: float, device: DeviceConfig,
                   session: DeviceSession | None, artifact: str | Path | None, x: np.ndarray,
                   labels: np.ndarray) -> Iterator[VoteCounter]:
    """A counter on the device `device` names ([device]: host, target, runtime, threads): the bundle and the
    points (as a set file) are sent once; the runner counts."""
    from ..export.bundle import read_manifest
    from ..remote.api import as_profile, choose_runtime, resolve_bundle
    from ..remote.options import device_session

    target = device.target
    if target is None:
        if artifact is None:
            raise SmoothingError("--host needs --target (the device profile) or --artifact BUNDLE")
        target = read_manifest(Path(artifact)).get("target")
    profile = as_profile(target)
    bundle = resolve_bundle(run, profile, artifact)
    if config.precision not in (read_manifest(bundle).get("models") or {}):
        raise SmoothingError(f"bundle {bundle} has no {config.precision} model; export with that precision")
    session = session or device_session(device)
    session.connect(bundle)
    asked = device.runtime or (None if config.runtime.startswith("torch") else config.runtime)
    runtime = choose_runtime(session, profile, asked)
    threads = config.threads if device.threads is None else device.threads
    names = ["points.npz"] + (["thresholds.npy"] if config.noise == "sound" else [])
    with tempfile.TemporaryDirectory() as tmp:
        write_points(Path(tmp) / "points.npz", x, labels, np.arange(len(x)))
        if config.noise == "sound":  # the device samples against the host's exact thresholds (no mpmath there)
            np.save(Path(tmp) / "thresholds.npy", discrete_gaussian(float(sigma)).thresholds)
        remote_dir = session.send_sets(Path(tmp), names)
    counter = DeviceCounter(session, f"{remote_dir}/points.npz", run.num_classes, sigma, config.seed, config.batch,
                            runtime, config.precision, threads,
                            f"{remote_dir}/thresholds.npy" if config.noise == "sound" else None)
    counter.bundle = str(bundle)
    yield counter


def merge_entry(path: Path, key: str, entry: dict[str, Any], config: SmoothConfig) -> dict[str, Any]:
    """Add a shard's points to the entry of its settings (by row; a row computed again replaces the old one)."""
    document = read_json(path) if path.exists() else {"format": FORMAT, "results": {}}
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(
            document.get("results"), dict):
        raise SmoothingError(f"{path} is not an edgerobust smoothing file; move it away and run smooth again")
    old = document["results"].get(key)
    points = {p["row"]: p for p in (old or {}).get("points", [])}
    points.update({p["row"]: p for p in entry["points"]})
    merged = {**entry, "points": [points[r] for r in sorted(points)]}
    merged["shards"] = [list(s) for s in sorted({tuple(s) for s in (old or {}).get("shards", [])}
                                                 | {tuple(entry["shards"][0])})]
    merged["complete"] = len(points) == config.points
    s = entry["settings"]
    merged["summary"] = summarize(merged["points"], config.radii, s["sigma"], s["alpha"], s["n"])
    document["results"][key] = merged
    document["latest"] = key
    write_json(path, document)
    return merged


def add_agreement(path: Path, device: dict[str, Any], x: np.ndarray) -> None:
    """Compare a device entry with every host entry of the same σ, α, n0 and n (smoothing/agreement.py)."""
    document = read_json(path)
    s = device["settings"]
    same = ("sigma", "alpha", "n0", "n")
    hosts = [e for e in document["results"].values()
             if e["settings"]["where"] == "host" and all(e["settings"][k] == s[k] for k in same)
             and e["settings"].get("noise", "gaussian") == s.get("noise", "gaussian")]
    if not hosts:
        return
    bundle = device["record"].get("bundle")  # the float64 analyses redraw the entry's own noise (Gaussian or sound)
    exact = exact_brackets(Path(bundle), s["precision"], x, device) if bundle and s["n"] <= EXACT_MAX else None
    same_seed = any(h["settings"]["seed"] == s["seed"] for h in hosts)
    limits = near_boundary_limits(Path(bundle), s["precision"], x, device, s["alpha"]) \
        if bundle and same_seed and s["n"] > EXACT_MAX else None
    document.setdefault("agreement", {})[device["key"]] = [compare_entries(h, device, s["alpha"], exact, limits)
                                                          for h in hosts]
    write_json(path, document)


def smooth_run(run: RunDir | str | Path, config: SmoothConfig | None = None, *, artifact: str | Path | None = None,
               device: DeviceConfig | None = None, session: DeviceSession | None = None,
               progress: bool | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """CERTIFY (and optionally PREDICT) for every σ of `config.sigma`; returns the merged entries written.

    On this machine by default; with `device` ([device]: host, target, runtime, threads; `session` an opened one)
    the device's runner draws the noise and counts the votes on the exported artifact."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    config = smooth_config(config, **overrides)
    x, labels, rows = points_of(run, config)
    entries = []
    for sigma in grid_values(config.sigma):
        one = replace(config, sigma=float(sigma))
        if device is not None:
            opened = device_counter(run, one, sigma, device, session, artifact, x, labels)
        else:
            opened = host_counter(run, one, sigma, artifact)
        started = time.perf_counter()
        with opened as counter, progress_bar(progress) as bar:
            task = bar.add_task(f"certify σ={sigma:g}", total=len(rows), status="")
            chunk = max(1, min(len(rows), 16)) if device is not None else 1
            points = certify_points(counter, x[rows.start:rows.stop], labels[rows.start:rows.stop], list(rows),
                                    sigma=sigma, alpha=one.alpha, n0=one.n0, n=one.n, predict=one.predict,
                                    chunk=chunk, on_points=lambda k, task=task: bar.advance(task, k))
            record = counter.describe()
            same = getattr(counter, "same_stream", None)
        seconds = time.perf_counter() - started
        settings = {"sigma": float(sigma), "alpha": one.alpha, "n0": one.n0, "n": one.n, "seed": one.seed,
                    "runtime": record["runtime"], "precision": one.precision, "where": record["where"],
                    "host": None if device is None else (session.label if session is not None else device.host),
                    "artifact_sha256": record.get("artifact_sha256"), "noise": one.noise}
        for p in points:
            p.update({k: settings[k] for k in ("sigma", "alpha", "n0", "n", "seed", "runtime", "precision",
                                               "artifact_sha256", "host")}, architecture=record.get("architecture"))
            if same is not None:
                p["same_stream_as_host"] = all(same.get((p["row"], ph), False) for ph in ("select", "estimate"))
        # the key leaves the host out: the devices of a fleet holding one artifact shard one entry (each point
        # names its host and architecture)
        key = entry_key({k: v for k, v in settings.items() if k != "host"})
        entry = {"key": key, "settings": settings, "record": record, "points": points,
                 "batch": one.batch, "points_total": one.points, "shards": [[rows.start, rows.stop]],
                 "seconds": seconds, "samples_per_s": len(points) * (one.n0 + one.n) / max(seconds, 1e-9),
                 "assumptions": SOUND_ASSUMPTIONS if one.noise == "sound" else ASSUMPTIONS, "config": asdict(one)}
        with _MERGE, locked(run.path, "RUN"):
            run = RunDir.open(run.path)  # another process or shard may have updated the manifest meanwhile
            merged = merge_entry(run.file(SMOOTHING_FILE), entry["key"], entry, one)
            run.record_artifact("smoothing", run.file(SMOOTHING_FILE))
            section = run.manifest.get("smoothing") if isinstance(run.manifest.get("smoothing"), dict) else {}
            section[entry["key"]] = {**settings, "acr": merged["summary"]["acr"], "points": len(merged["points"]),
                                     "complete": merged["complete"], "file": SMOOTHING_FILE}
            run.update("smoothing", section)
            if record["where"] == "device":
                add_agreement(run.file(SMOOTHING_FILE), merged, x)
        entries.append(merged)
    return entries
