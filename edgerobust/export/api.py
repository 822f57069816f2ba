"""`export_run`: a run directory's model -> a checked deployment bundle for one target device."""
from __future__ import annotations

import math
import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..compute_device import describe_device, resolve_device
from ..config import ExportConfig, validated
from ..data import load_dataset
from ..devices import DeviceProfile, load_profile
from ..errors import DataError, EdgeRobustError
from ..io import sha256_file
from ..progress import progress_bar
from ..run import RunDir, now
from ..runner.precisions import PRECISIONS, REFERENCE
from ..runner.runtime_specs import RUNTIME_SPECS
from ..versions import package_versions
from .bundle import save_array, staging, write_manifest
from .calibration import CALIBRATION_NAME, calibration_sample, save_calibration
from .given_graph import golden_tolerance_entries, graph_for_export
from .memory import check_budget, estimate_memory
from .onnx_export import INPUT_NAME, OUTPUT_NAME, opset_of, save_onnx
from .operators import check_operators, graph_operators
from .parity import agreement_line, check_agreement, check_parity, run_torch
from .precisions import ENGINE, exportable, host_precision
from .quantize import Int8Settings, float_operators, int8_record
from .ship import ship_replay_sets, ship_runner
from .tolerance import float64_outputs

FP32_TOLERANCE = host_precision("fp32").tolerance  # absolute, on logits
FP16_TOLERANCE = host_precision("fp16").tolerance  # relative to the largest |logit|: fp16 keeps ~3 significant digits


@dataclass
class ExportResult:
    bundle: Path
    manifest: dict[str, Any]  # the bundle's manifest.json
    summary: dict[str, Any]  # what went into the run's manifest under export.<target>


def default_bundle_path(run: RunDir, profile: DeviceProfile) -> Path:
    return run.path / f"export-{profile.name}"


def choose_precisions(profile: DeviceProfile, fp16: bool | None = None, int8: bool | None = None,
                      wanted: dict[str, bool | None] | None = None) -> list[str]:
    """The reference always; every other precision export can make (export/precisions.py, in table order) where the
    target has it unless switched off (`wanted[name]` False; `fp16`/`int8` are the config's switches); asked-for but
    absent from the target, or not exportable, is an error."""
    wanted = {"fp16": fp16, "int8": int8, **(wanted or {})}
    can = exportable()
    for name, want in wanted.items():
        if want and name not in can:
            known = name in PRECISIONS
            raise EdgeRobustError(f"export cannot make {name} artifacts (it makes {', '.join(can)})" if known else
                                  f"unknown precision '{name}'; valid precisions: {', '.join(PRECISIONS)}")
    chosen = [REFERENCE]
    for name in can:
        want = wanted.get(name)
        if name == REFERENCE:
            continue
        if want:
            profile.require_precision(name)
        if want or (want is None and profile.supports_precision(name)):
            chosen.append(name)
    return chosen


def export_plan(target: str | Path | DeviceProfile, opset: int | None, fp16: bool | None, int8: bool | None,
                wanted: dict[str, bool | None] | None = None) -> tuple[DeviceProfile, int, list[str]]:
    """The target's profile, the opset (default: its maximum) and the precisions to export, each checked."""
    profile = load_profile(target)
    opset = profile.max_opset if opset is None else int(opset)
    profile.check_opset(opset)
    return profile, opset, choose_precisions(profile, fp16, int8, wanted)


def onnx_precisions(profile: DeviceProfile, precisions: list[str]) -> list[str]:
    """The precisions besides the reference whose ONNX graph goes into the bundle: those with an "onnx" converter,
    a calibrated one (int8) only where the profile runs it with onnxruntime (`[int8] runtime = "ort"`; a TensorRT
    target calibrates its engine on the device instead)."""
    return [p for p in precisions if p != REFERENCE and "onnx" in host_precision(p).converters
            and (not PRECISIONS[p].calibrated or profile.int8_runtime == "ort")]


def runtimes_for(profile: DeviceProfile, precision: str) -> list[str]:
    """The profile's runtimes whose record runs `precision` from an ONNX graph (the entry's `runtimes`)."""
    return [name for name in profile.runtimes
            if RUNTIME_SPECS[name].input == "onnx" and precision in RUNTIME_SPECS[name].precisions]


def int8_settings(profile: DeviceProfile, config: ExportConfig) -> Int8Settings:
    """The quantizer settings: the profile's [int8] table, the calibration method and the operators left in float
    overridable by the config."""
    table = profile.int8 or {}
    return Int8Settings(method=config.int8_method or table.get("method", "minmax"),
                        reduce_range=bool(table.get("reduce_range", False)),
                        exclude=config.int8_exclude or "none")


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def load_inputs(run: RunDir, split: str, data_root: str | Path | None) -> Any:
    name = run.dataset_name
    if not name:
        raise EdgeRobustError(f"run {run.path} does not record its dataset; parity needs real inputs from it")
    root = data_root or run.data_root
    try:
        dataset = load_dataset(name, split, root, **run.data_options)
    except DataError as exc:
        raise EdgeRobustError(f"parity needs real inputs but {name} ({split}) cannot be loaded: {exc}; "
                              "pass --data-root") from None
    if tuple(dataset.input_shape) != run.input_shape:
        raise EdgeRobustError(f"dataset {name} has inputs {dataset.input_shape} but the model takes {run.input_shape}")
    return dataset


def export_run(run: RunDir | str | Path, config: ExportConfig | None = None, *, out: str | Path | None = None,
               data_root: str | Path | None = None, progress: bool | None = None, device: str | Any | None = None
               ) -> ExportResult:
    """Export the run's model for `config.target` into a deployment bundle; every check passes or nothing is written.

    `config` is the [export] section (default: ExportConfig's defaults; one made in Python is checked here). The
    graph is traced on the CPU; `device` (auto when None) computes the PyTorch reference outputs, in full float32,
    that the golden outputs and the fp32 / fp16 parity checks compare against.
    """
    config = validated(config or ExportConfig())
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    device = resolve_device(device)
    profile, opset, precisions = export_plan(config.target, config.opset, config.fp16, config.int8)
    if config.engine:
        from .tensorrt_build import check_local_device, import_tensorrt

        import_tensorrt()
        check_local_device(profile)
    bundle_path = Path(out) if out is not None else default_bundle_path(run, profile)
    input_shape = run.input_shape
    runtime = profile.runtimes[0]

    hosts = {p: host_precision(p) for p in precisions}
    graphs = onnx_precisions(profile, precisions)  # ONNX files besides fp32
    calibrated = [p for p in graphs if PRECISIONS[p].calibrated]
    left_out: dict[str, dict[str, Any]] = {}
    if calibrated and not config.calibration:
        if config.int8:  # asked for by name
            raise EdgeRobustError(f"{', '.join(calibrated)} needs a calibration set and --calibration is 0; export "
                                  f"with --calibration N (N > 0) or --no-{calibrated[0]}")
        left_out = {p: {"reason": f"{p} needs a calibration set and --calibration is 0"} for p in calibrated}
        graphs = [p for p in graphs if p not in left_out]
        precisions = [p for p in precisions if p not in left_out]
        calibrated = []
    if calibrated and opset < 13:
        raise EdgeRobustError(f"onnxruntime int8 with per-channel weight scales needs ONNX opset 13 or later, not "
                              f"{opset}; pass --opset 13 or --no-int8")
    steps = ["export", "parity", *graphs, "memory", "data", *(["engine"] if config.engine else []), "bundle"]
    limits = {REFERENCE: config.tolerance, "fp16": config.fp16_tolerance}  # None: the precision table's
    with progress_bar(progress) as bar, staging(bundle_path) as stage:
        task = bar.add_task(f"export for {profile.name}", total=len(steps), status="")

        def advance(status: str) -> None:
            bar.update(task, advance=1, status=status)

        model = run.load_model().to(device)
        proto = graph_for_export(run, model, input_shape, opset)  # an imported ONNX run: its own graph
        check_operators(proto, profile.operator_set, profile.name, runtime)
        proto.producer_name = "edgerobust"
        info = run.manifest["model"]
        for key, value in {"model": info["spec"], "input": "NCHW float32 pixels in [0,1]",
                           "mean": info.get("mean"), "std": info.get("std"), "target": profile.name}.items():
            proto.metadata_props.add(key=key, value=str(value))
        reference_file = PRECISIONS[REFERENCE].file_name("onnx")
        save_onnx(proto, stage / reference_file)
        advance(f"opset {opset_of(proto)}")

        test = load_inputs(run, "test", data_root)
        inputs = test.images[:config.golden].numpy().astype(np.float32)
        labels = test.labels[:config.golden].numpy().astype(np.int64)
        reference = run_torch(model, inputs)
        models: dict[str, dict[str, Any]] = {}
        parity = check_parity(reference, stage / reference_file, inputs, config.tolerance, REFERENCE)
        models[REFERENCE] = {"file": reference_file, "parity": parity}
        advance(f"{REFERENCE} max |Δ| {parity['max_abs_diff']:.2g}")

        images = calib_labels = None
        if config.calibration:
            images, calib_labels = calibration_sample(load_inputs(run, "train", data_root), config.calibration)
        for precision in graphs:  # each precision's ONNX graph, made by its converter from the fp32 one
            context = {}
            if PRECISIONS[precision].calibrated:
                settings = int8_settings(profile, config)
                qat = (run.manifest.get("training") or {}).get("qat")
                settings = replace(settings, qat=qat) if qat else settings  # a QAT run: its own scales
                context = {"calibration": images, "input_shape": tuple(input_shape), "settings": settings}
            graph = hosts[precision].convert(proto, **context)
            check_operators(graph, profile.operator_set, profile.name, runtime)
            name = PRECISIONS[precision].file_name("onnx")
            save_onnx(graph, stage / name)
            if PRECISIONS[precision].parity == "agreement":
                figures = check_agreement(stage / reference_file, stage / name,
                                          test.images[:config.parity_points].numpy().astype(np.float32),
                                          test.labels[:config.parity_points].numpy(), inputs, reference, labels,
                                          config.int8_min_agreement, config.int8_max_drop, precision)
                entry = {"file": name, "parity": figures, "runtimes": runtimes_for(profile, precision)}
                if context:
                    entry["quantization"] = {**context["settings"].to_dict(), "calibration": CALIBRATION_NAME,
                                             "float_operators": float_operators(graph),
                                             **{k: v for k, v in int8_record(graph).items()
                                                if k in ("measured_fastest_call_ms", "chosen", "disabled_optimizers")},
                                             "quantizer": f"onnxruntime.quantization {ort_version()}"}
                if not figures["passed"] and config.force_int8:
                    figures["forced"] = True
                elif not figures["passed"]:
                    line = agreement_line(figures, precision)
                    if config.int8 and precision == "int8":  # asked for by name: refuse, nothing written
                        raise EdgeRobustError(f"{line}; the export was not written (--force-int8 keeps it, "
                                              "--int8-max-drop raises the tolerance)")
                    (stage / name).unlink()
                    left_out[precision] = {"reason": line, "parity": figures}
                    advance(f"{precision} left out")
                    continue
                models[precision] = entry
                advance(f"{precision} top-1 {figures['top1_agreement']:.3f}")
                continue
            limit = limits.get(precision) or hosts[precision].tolerance
            figures = check_parity(reference, stage / name, inputs, math.inf if limit is None else limit, precision,
                                   relative=hosts[precision].tolerance_kind == "relative")
            models[precision] = {"file": name, "parity": figures}
            advance(f"{precision} top-1 {figures['top1_agreement']:.3f}")
        precisions = [p for p in precisions if p not in left_out]

        memory = estimate_memory(proto, config.batch)
        memory["budget_bytes"] = profile.memory_budget_bytes
        check_budget(memory, profile.memory_budget_bytes, profile.name)
        advance(f"{memory['estimate_bytes'] / 2**20:.1f} MiB")

        save_array(stage / "golden_inputs.npy", inputs)
        save_array(stage / "golden_outputs.npy", reference)
        save_array(stage / "golden_labels.npy", labels)
        exact = float64_outputs(model, inputs)
        derived = [p for p in models if PRECISIONS[p].parity == "derived"]  # the agreement rule needs no bound
        for precision, entry in golden_tolerance_entries(run, stage, proto, inputs, derived, exact).items():
            models[precision]["golden_tolerance"] = entry
        calib_info = None
        if config.calibration:
            save_calibration(stage / CALIBRATION_NAME, images, calib_labels)
            calib_info = {"file": CALIBRATION_NAME, "count": len(images), "split": "train",
                          "sampling": "class-balanced, seed 0"}
        write_profile(stage, profile)
        runner = ship_runner(stage)
        replay = ship_replay_sets(run.path, stage, input_shape)
        for precision, entry in models.items():
            entry.update(precision=precision, sha256=sha256_file(stage / entry["file"]))
        advance("golden + calibration + runner")

        engines = []
        if config.engine:
            calib = images if config.calibration else None
            for precision in (p for p in precisions if ENGINE in hosts[p].converters):
                name = PRECISIONS[precision].file_name("engine")
                engines.append(hosts[precision].converters[ENGINE](
                    stage / reference_file, stage / name, profile, precision, input_shape,
                    max_batch=max(config.batch, 1), calibration=calib))
                engines[-1]["path"] = name
            advance(f"{len(engines)} engine(s)")

        manifest = write_manifest(stage, {
            "created": now(), "target": profile.name, "runtime": runtime, "runtimes": profile.runtimes,
            "precisions": precisions, "opset": opset_of(proto), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
            "input_shape": list(input_shape), "dynamic_batch": True, "num_classes": run.num_classes,
            "model": {"spec": info["spec"], "mean": info.get("mean"), "std": info.get("std"),
                      "normalisation": "inside the graph", "weights_sha256": run.manifest.get("weights_sha256"),
                      "run": str(run.path)},
            "operators": dict(sorted((op, n) for (_, op), n in graph_operators(proto).items())),
            "models": models, "memory": memory,
            "golden": {"inputs": "golden_inputs.npy", "outputs": "golden_outputs.npy", "labels": "golden_labels.npy",
                       "count": len(inputs), "split": "test",
                       "outputs_from": f"PyTorch eager fp32 ({describe_device(device)['device']}, no TF32)"},
            "calibration": calib_info, "runner": runner, "replay": replay, "left_out": left_out,
            "engines": [{**e, "built_on": platform.node(), "note": "valid only on this device"} for e in engines],
            "versions": package_versions(),
        })
        advance(str(bundle_path))

    summary = {"bundle": run.relative(bundle_path), "created": manifest["created"], "target": profile.name,
               "runtime": runtime, "opset": manifest["opset"], "precisions": precisions,
               "parity": {p: m["parity"] for p, m in models.items()}, "memory": memory,
               "files": {name: entry["bytes"] for name, entry in manifest["files"].items()},
               "operators": manifest["operators"], "engines": manifest["engines"], "left_out": left_out,
               "device": describe_device(device)}
    exports = dict(run.manifest.get("export", {}))
    exports[profile.name] = summary
    run.update("export", exports)
    return ExportResult(bundle_path, manifest, summary)


def write_profile(directory: Path, profile: DeviceProfile) -> None:
    from ..io import write_json

    write_json(directory / "profile.json", {k: v for k, v in profile.to_dict().items() if k != "source"})
