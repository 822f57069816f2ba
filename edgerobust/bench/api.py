"""`bench_run`: time a run's model on this machine for a target profile, write RUN/bench.json.

Bench measures on the machine it runs on; the target profile chooses runtimes, precisions and threads, and
a profile for another CPU architecture is refused rather than reported as if measured there.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..compute_device import describe_device, resolve_device
from ..config import BenchConfig, validated
from ..data import ArrayDataset, load_dataset
from ..errors import EdgeRobustError
from ..export.given_graph import write_graph_for_bench
from ..io import write_json
from ..models import count_flops, count_parameters
from ..progress import progress_bar
from ..run import RunDir, now
from ..versions import machine_info, package_versions
from .ceiling import achieved_gflops, gemm_ceiling
from .memory import measure_memory
from .modes import MODES, run_mode, tile_images
from .runtimes import RUNTIMES, BenchModel, get_runtime, open_session, require_runtime
from .timing import Clock, TimingPlan

BENCH_NAME = "bench.json"
BENCH_FORMAT = "edgerobust-bench-1"
PARITY_IMAGES = 8
DEFAULT_OPSET = 17
HOST_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def host_arch() -> str:
    machine = platform.machine().lower()
    return HOST_ARCH_ALIASES.get(machine, machine)


def choose_runtimes(profile, requested: Sequence[str] | None, precision: str) -> tuple[list[str], dict[str, str]]:
    """(runtimes to time, {runtime: why it is skipped}). Explicit requests must run; defaults skip with a reason."""
    if requested:
        for name in requested:
            require_runtime(name, precision)  # unknown names list the valid ones; unavailable ones say why
        return list(dict.fromkeys(requested)), {}
    chosen, skipped = [], {}
    for name in profile.runtimes:
        if name not in RUNTIMES:
            skipped[name] = "edgerobust has no such runtime on the host"
            continue
        runtime = get_runtime(name)
        ok, reason = runtime.availability()
        if not ok:
            skipped[name] = reason
        elif precision not in runtime.precisions:
            skipped[name] = f"cannot run {precision}"
        else:
            chosen.append(name)
    if not chosen:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise EdgeRobustError(f"none of target {profile.name}'s runtimes can run here ({why})")
    return chosen, skipped


def bench_plan(target: str | Path | Any, precision: str, runtimes: Sequence[str] | None
               ) -> tuple[Any, list[str], dict[str, str]]:
    """The target's profile (one this machine can stand for), checked for the precision, and the runtimes to time
    with those skipped and why."""
    from ..devices import load_profile

    profile = load_profile(target)
    check_target_matches_host(profile)
    profile.require_precision(precision)
    return (profile, *choose_runtimes(profile, runtimes, precision))


def check_target_matches_host(profile) -> None:
    if profile.arch != host_arch():
        raise EdgeRobustError(f"target {profile.name} is {profile.arch} but this machine is {host_arch()}; bench "
                              f"times the model where it runs, so run it on the device or pick an {host_arch()} target")


def bench_inputs(run: RunDir, count: int = 256) -> tuple[ArrayDataset, str]:
    """Real test images when the run's dataset loads here; otherwise seeded uniform pixels (said so)."""
    name = run.dataset_name
    if name:
        with contextlib.suppress(EdgeRobustError, OSError):
            data = load_dataset(name, "test", run.data_root, **run.data_options)
            if data.input_shape == run.input_shape:
                return data.subset(count), f"{name} test split ({min(count, len(data))} images)"
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((count, *run.input_shape), generator=generator)
    data = ArrayDataset(images, torch.zeros(count, dtype=torch.int64), run.num_classes, "uniform", "bench")
    return data, f"uniform random pixels, seed 0 ({count} images)"


def exported_onnx(run: RunDir, target: str) -> tuple[dict[str, Path], str | None]:
    """The ONNX models of the run's export bundle for `target` (verified against its sha256 manifest)."""
    bundle = run.bundle(target)
    if bundle is None:
        return {}, None
    from ..export.bundle import read_manifest, verify_bundle

    verify_bundle(bundle)  # a modified or unsealed bundle (links, escaping paths) is refused, never timed
    models = read_manifest(bundle).get("models", {})
    return {p: bundle / m["file"] for p, m in models.items() if str(m.get("file", "")).endswith(".onnx")}, str(bundle)


def export_for_bench(module: torch.nn.Module, input_shape: tuple[int, ...], path: Path, opset: int) -> Path:
    """A temporary ONNX export with the same settings as `edgerobust export` (checked, simplified)."""
    from ..export import export_onnx

    return Path(export_onnx(module, input_shape, path, opset=opset, dynamic_batch=True))


def model_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def bench_run(run: RunDir | str | Path, config: BenchConfig | None = None, *, clock: Clock = time.perf_counter_ns,
              progress: bool | None = None, write: bool = True, device: str | torch.device | None = None
              ) -> dict[str, Any]:
    """Time the run's model on each runtime and batch size; return the bench record (and write RUN/bench.json).

    `config` is the [bench] section (default: BenchConfig's defaults; one made in Python is checked here); with
    `config.precisions` each is timed in turn and the rows are merged into one record (`bench_precisions`).
    `device` (auto when None) is the GPU the CUDA runtimes (torch-cuda, ...) use; `cpu` refuses them.
    """
    config = validated(config or BenchConfig())
    if config.precisions:  # several side by side: one pass per precision, merged into one record
        return bench_precisions(run, config, clock=clock, write=write, progress=progress, device=device)
    device = resolve_device(device)
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    if write and not os.access(run.path, os.W_OK):
        raise EdgeRobustError(f"run directory {run.path} is not writable, so bench.json cannot be written there; "
                              "copy the run somewhere writable")
    MODES.get(config.mode)
    plan = TimingPlan(config.warmup, config.repeats).validate()
    batches = sorted(set(config.batches))
    profile, names, skipped = bench_plan(config.target, config.precision, config.runtimes)
    if run.is_onnx:  # the model is an ONNX file: torch runtimes would time onnxruntime behind a wrapper
        torch_runtimes = [n for n in names if RUNTIMES.get(n).spec.input != "onnx"]
        if config.runtimes and torch_runtimes:
            raise EdgeRobustError(f"runtime(s) {', '.join(torch_runtimes)} time a PyTorch module, but this run's "
                                  "model is an ONNX file; choose an onnxruntime or TensorRT runtime")
        skipped.update({n: "the run's model is an ONNX file" for n in torch_runtimes})
        names = [n for n in names if n not in torch_runtimes]
    on_gpu = [n for n in names if get_runtime(n).device == "cuda"]
    if on_gpu and device.type != "cuda":
        if config.runtimes:
            raise EdgeRobustError(f"runtime(s) {', '.join(on_gpu)} run on CUDA but --device is {device}; "
                                  "pass --device cuda (or auto) or choose a CPU runtime")
        skipped.update({n: f"--device {device}" for n in on_gpu})
        names = [n for n in names if n not in on_gpu]
        if not names:
            raise EdgeRobustError(f"target {profile.name}'s runtimes all run on CUDA but --device is {device}")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the CUDA runtimes use the current device
    threads = config.threads or profile.resolved_threads()
    if threads < 1:
        raise EdgeRobustError(f"the target's threads must be at least 1, got {threads}")

    onnx, bundle = exported_onnx(run, profile.name)  # a bundle that is not sealed is refused before any work
    module = run.load_model()
    spec, shape = run.manifest["model"]["spec"], run.input_shape
    flops = count_flops(module, shape)
    data, input_note = bench_inputs(run)
    reference = _reference_logits(module, data)
    record: dict[str, Any] = {
        "format": BENCH_FORMAT, "created": now(), "command": " ".join(sys.argv), "run": str(run.path),
        "model": {"spec": spec, "input_shape": list(shape), "parameters": count_parameters(module),
                  "flops_per_image": flops, "weight_bytes": model_bytes(module),
                  "weights_sha256": run.manifest.get("weights_sha256")},
        "target": profile.to_dict(), "host": machine_info(), "versions": package_versions(),
        "load_average_before": list(os.getloadavg()),
        "device": describe_device(device),
        "mode": config.mode, "mode_help": MODES.help(config.mode), "precision": config.precision, "threads": threads,
        "warmup": plan.warmup, "repeats": plan.repeats, "batches": batches, "input": input_note,
        "clock": getattr(clock, "__qualname__", repr(clock)),
        "runtimes": {n: get_runtime(n).describe() for n in names},
        "skipped_runtimes": skipped, "ceilings": {}, "results": [], "parity": {},
    }
    record["onnx_source"] = f"export bundle {bundle} (sha256 verified)" if bundle else "exported for this bench"
    with tempfile.TemporaryDirectory(prefix="edgerobust-bench-") as tmp:
        if "fp32" not in onnx and any(RUNTIMES.get(n).spec.input == "onnx" for n in names):
            opset = min(DEFAULT_OPSET, profile.max_opset)
            onnx["fp32"] = write_graph_for_bench(run, module, shape, Path(tmp) / "model.onnx", opset)
            record["onnx_opset"] = opset
        model = BenchModel(spec, module, shape, onnx)
        record["model"]["onnx_bytes"] = {p: path.stat().st_size for p, path in onnx.items()}
        with progress_bar(progress) as bar:
            task = bar.add_task(f"bench {spec}", total=len(names) * (1 if config.mode == "per-image" else len(batches)),
                                status="")
            for name in names:
                bar.update(task, status=name)
                _bench_one(record, get_runtime(name), model, data, reference, plan, config, batches, threads, flops,
                           clock, lambda: bar.advance(task))
    for device, first in record["ceilings"].items():  # re-measured after timing; the better one stands
        again = gemm_ceiling(device, first["threads"])
        record["ceilings"][device] = {**max(first, again, key=lambda c: c["gflops"]),
                                      "measurements_gflops": [first["gflops"], again["gflops"]]}
        for row in record["results"]:
            if row["device"] == device:
                row["ceiling_fraction"] = row["achieved_gflops"] / record["ceilings"][device]["gflops"]
    record["load_average_after"] = list(os.getloadavg())
    if write:
        path = write_json(run.file(BENCH_NAME), record)
        run.record_artifact("bench", path, kind="bench")
        run.update("bench", summary(record))
    return record


def _reference_logits(module: torch.nn.Module, data: ArrayDataset) -> np.ndarray:
    with torch.inference_mode():
        return module(data.images[:PARITY_IMAGES]).numpy()


def _bench_one(record, runtime, model, data, reference, plan, config, batches, threads, flops, clock,
               advance) -> None:
    precision = config.precision
    device = runtime.device
    if device not in record["ceilings"]:
        record["ceilings"][device] = gemm_ceiling(device, threads if device == "cpu" else None)
    with open_session(runtime, model, precision, threads, max(batches)) as session:
        logits = session.infer(data.images[:PARITY_IMAGES].numpy())
        record["parity"][runtime.name] = {
            "max_abs_diff_vs_torch_cpu": float(np.abs(logits - reference).max()),
            "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()), "images": len(reference)}
        for row in run_mode(config.mode, session, data, batches, plan, clock=clock):
            latency_s = row["mean_ms"] / 1e3
            row.update(runtime=runtime.name, runtime_version=runtime.version(), device=device, precision=precision,
                       threads=threads if device == "cpu" else None,
                       compile_seconds=session.compile_seconds or None,
                       **({"disabled_optimizers": session.disabled_optimizers}
                          if getattr(session, "disabled_optimizers", None) else {}),
                       achieved_gflops=achieved_gflops(flops, row["batch"], latency_s),
                       ceiling_fraction=None)  # set once the ceiling is re-measured after timing
            if config.memory:
                prepared = session.prepare(_first(data, row["batch"]))
                row["memory"] = measure_memory(lambda p=prepared: session.run(p), device=device)
            record["results"].append(row)
            advance()


def _first(data: ArrayDataset, batch: int) -> np.ndarray:
    return tile_images(data.images.numpy(), batch)


def _row_key(row: dict[str, Any], record: dict[str, Any]) -> str:
    """runtime@batch, with the precision when the record holds several (runtime:precision@batch)."""
    several = len(record.get("precisions") or [record["precision"]]) > 1
    return f"{row['runtime']}{':' + row['precision'] if several else ''}@{row['batch']}"


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The short form kept in the run manifest: p50 per runtime and batch."""
    return {"target": record["target"]["name"], "mode": record["mode"], "precision": record["precision"],
            "threads": record["threads"], "created": record["created"],
            "p50_ms": {_row_key(r, record): r["p50_ms"] for r in record["results"]},
            "file": BENCH_NAME}


def bench_precisions(run: RunDir | str | Path, config: BenchConfig | None = None, *,
                     clock: Clock = time.perf_counter_ns, write: bool = True, progress: bool | None = None,
                     device: str | torch.device | None = None) -> dict[str, Any]:
    """`bench_run` once per precision of `config.precisions` (fp32, fp16, int8, ...; default [config.precision]) on
    the same runtimes and batches, as one record whose rows carry their precision side by side (RUN/bench.json);
    `precision` names the first, `precisions` all."""
    config = validated(config or BenchConfig())
    records = [bench_run(run, replace(config, precision=p, precisions=None), clock=clock, write=False,
                         progress=progress, device=device) for p in config.chosen_precisions]
    precisions = [r["precision"] for r in records]
    record = records[0]
    record["precisions"] = precisions
    record["parity_by_precision"] = {p: r["parity"] for p, r in zip(precisions, records, strict=True)}
    for p, other in zip(precisions[1:], records[1:], strict=True):
        record["results"].extend(other["results"])
        for name, reason in other["skipped_runtimes"].items():
            record["skipped_runtimes"].setdefault(f"{name} ({p})", reason)
        record["runtimes"].update(other["runtimes"])
    record["load_average_after"] = records[-1]["load_average_after"]
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    if write:
        path = write_json(run.file(BENCH_NAME), record)
        run.record_artifact("bench", path, kind="bench")
        run.update("bench", summary(record))
    return record
