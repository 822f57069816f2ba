"""`edgerobust export RUN --target NAME` and `edgerobust verify BUNDLE`."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer

from ..config import ExportConfig, option_help
from ..export.api import export_run
from ..export.bundle import verify_bundle
from ..runner.precisions import PRECISIONS
from .common import RECIPE_HELP, command, console, device_option, recipe_section
from .defaults import RUN_HELP, TARGET_HELP, bundle_argument, run_argument
from .render import table

H = functools.partial(option_help, ExportConfig)


@command
def export(
    run: Optional[Path] = typer.Argument(None, help=RUN_HELP),
    target: Optional[str] = typer.Option(None, "--target", "-t", help=H("target", TARGET_HELP.rstrip("."))),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle directory (default: RUN/export-TARGET)."),
    opset: Optional[int] = typer.Option(None, "--opset", help=H("opset")),
    fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16", help=H("fp16")),
    int8: Optional[bool] = typer.Option(None, "--int8/--no-int8", help=H("int8")),
    int8_method: Optional[str] = typer.Option(None, "--int8-method", help=H("int8_method")),
    int8_exclude: Optional[str] = typer.Option(None, "--int8-exclude", help=H("int8_exclude")),
    int8_max_drop: Optional[float] = typer.Option(None, "--int8-max-drop", help=H("int8_max_drop")),
    int8_min_agreement: Optional[float] = typer.Option(None, "--int8-min-agreement", help=H("int8_min_agreement")),
    force_int8: Optional[bool] = typer.Option(None, "--force-int8", help=H("force_int8")),
    parity_points: Optional[int] = typer.Option(None, "--parity-points", help=H("parity_points")),
    batch: Optional[int] = typer.Option(None, "--batch", "-b", help=H("batch")),
    golden: Optional[int] = typer.Option(None, "--golden", help=H("golden")),
    calibration: Optional[int] = typer.Option(None, "--calibration", help=H("calibration")),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help=H("tolerance")),
    engine: Optional[bool] = typer.Option(None, "--engine/--no-engine", help=H("engine")),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help=RECIPE_HELP.format(section="[export]")),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Directory holding on-disk datasets."),
    device: str = device_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Export a run's model for a target device: ONNX (+ fp16), parity checks, memory check, deployment bundle."""
    config = recipe_section(recipe, "export", dict(target=target, opset=opset, fp16=fp16, int8=int8, batch=batch,
                                                   golden=golden, calibration=calibration, tolerance=tolerance,
                                                   engine=engine, int8_method=int8_method, int8_exclude=int8_exclude,
                                                   int8_max_drop=int8_max_drop,
                                                   int8_min_agreement=int8_min_agreement, force_int8=force_int8,
                                                   parity_points=parity_points))
    run = run_argument(run, config.target)
    result = export_run(run, config, out=out, data_root=data_root, progress=False if quiet else None, device=device)
    m = result.manifest
    rows = [(precision, entry["file"], m["files"][entry["file"]]["bytes"], entry["parity"]["max_abs_diff"],
             entry["parity"]["top1_agreement"], _tolerance(entry["parity"]))
            for precision, entry in m["models"].items()]
    console.print(table(f"export for {m['target']} (opset {m['opset']}, runtime {m['runtime']})",
                        ("precision", "file", "bytes", "max |Δ| vs PyTorch", "top-1 agreement", "tolerance"), rows))
    for precision, left in (m.get("left_out") or {}).items():
        console.print(f"[yellow]{precision} left out of the bundle[/]: {left['reason']} (--force-int8 keeps it)")
    for precision, entry in m["models"].items():
        if entry["parity"].get("tolerance_kind") == "agreement":
            console.print(f"{precision}: {_accuracy(entry['parity'])}")
        if entry.get("quantization"):
            q = entry["quantization"]
            console.print(f"{precision}: onnxruntime {q['format']} ({q['weights']} per-channel weights, "
                          f"{q['activations']} activations, {q['method']} calibration"
                          f"{', reduce_range' if q['reduce_range'] else ''}) on {m['calibration']['count']} inputs"
                          + (f"; float32: {', '.join(q['float_operators'])}" if q.get("float_operators") else "")
                          + (f"; measured fastest: {q['chosen']}" if q.get("chosen") else "")
                          + (f"; sessions skip {', '.join(q['disabled_optimizers'])}"
                             if q.get("disabled_optimizers") else ""))
    mem = m["memory"]
    console.print(f"memory at batch {mem['batch']}: {mem['estimate_bytes'] / 2**20:.2f} MiB (weights "
                  f"{mem['weights_bytes'] / 2**20:.2f} + activations {mem['activation_peak_bytes'] / 2**20:.2f}) "
                  f"of a {mem['budget_bytes'] / 2**30:.3g} GiB budget")
    calibrated = [p.upper() for p in m["precisions"] if p in PRECISIONS and PRECISIONS[p].calibrated
                  and p not in m["models"]]  # calibrated on the device (TensorRT engines)
    if calibrated and m.get("calibration"):
        console.print(f"{', '.join(calibrated)}: {m['calibration']['count']} calibration inputs in "
                      f"{m['calibration']['file']} "
                      "(build the engine on the device with --engine)")
    console.print(f"bundle: [bold]{result.bundle}[/] ({len(m['files'])} files + manifest.json)")


def _accuracy(parity: dict) -> str:
    """int8 (agreement rule): its clean accuracy against fp32's on the parity points."""
    if parity.get("tolerance_kind") != "agreement":
        return ""
    return (f"accuracy {parity['accuracy']:.2%} against fp32 {parity['reference_accuracy']:.2%} on "
            f"{parity['points']} test points")


def _tolerance(parity: dict) -> str:
    if parity.get("tolerance_kind") == "agreement":
        return f"drop ≤ {parity['max_accuracy_drop'] * 100:g} pt{' (forced)' if parity.get('forced') else ''}"
    return f"{parity['tolerance']:g} {parity['tolerance_kind']}"


@command
def verify(
    bundle: Optional[Path] = typer.Argument(None, help="Bundle directory (default: the current directory if it is a "
                                            "bundle, else the latest bundle of the current or most recent run)."),
    golden: bool = typer.Option(True, "--golden/--no-golden", help="Also re-run the golden inputs (onnxruntime)."),
) -> None:
    """Verify a deployment bundle: sha256 of every file, no extra files, and the golden outputs."""
    bundle = bundle_argument(bundle)
    result = verify_bundle(bundle, run_golden=golden)
    console.print(f"[green]ok[/]: {result['files']} files match the manifest of {bundle}")
    for precision, figures in result.get("golden", {}).items():
        console.print(f"  {precision}: golden outputs reproduced (max |Δ| {figures['max_abs_diff']:.3g}, "
                      f"top-1 agreement {figures['top1_agreement']:.3f})")
