"""`edgerobust export RUN --target NAME` and `edgerobust verify BUNDLE`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..export.api import FP32_TOLERANCE, export_run
from ..export.bundle import verify_bundle
from .common import command, console, device_option
from .render import table


@command
def export(
    run: Path = typer.Argument(..., help="Run directory (from `edgerobust train` or `compress`)."),
    target: str = typer.Option("x86-cpu", "--target", "-t", help="Device profile name or .toml path "
                               "(see `edgerobust devices list`)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle directory [default: RUN/export-TARGET]."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset [default: the target's maximum]."),
    fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16", help="fp16 model [default: if the target has it]."),
    int8: Optional[bool] = typer.Option(None, "--int8/--no-int8", help="INT8 (TensorRT, calibrated) [default: if "
                                        "the target has it]."),
    batch: int = typer.Option(1, "--batch", "-b", help="Batch size for the memory estimate and TensorRT engines."),
    golden: int = typer.Option(64, "--golden", help="Golden test inputs (parity and on-device checks)."),
    calibration: int = typer.Option(256, "--calibration", help="INT8 calibration inputs saved (0 = none)."),
    tolerance: float = typer.Option(FP32_TOLERANCE, "--tolerance", help="Max |logit difference| for fp32 parity."),
    engine: bool = typer.Option(False, "--engine", help="Also build TensorRT engines (only on the target device)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Directory holding on-disk datasets."),
    device: str = device_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Export a run's model for a target device: ONNX (+ fp16), parity checks, memory check, deployment bundle."""
    result = export_run(run, target, out=out, opset=opset, fp16=fp16, int8=int8, batch=batch, golden=golden,
                        calibration=calibration, tolerance=tolerance, engine=engine, data_root=data_root,
                        progress=False if quiet else None, device=device)
    m = result.manifest
    rows = [(precision, entry["file"], m["files"][entry["file"]]["bytes"], entry["parity"]["max_abs_diff"],
             entry["parity"]["top1_agreement"], f"{entry['parity']['tolerance']:g} {entry['parity']['tolerance_kind']}")
            for precision, entry in m["models"].items()]
    console.print(table(f"export for {m['target']} (opset {m['opset']}, runtime {m['runtime']})",
                        ("precision", "file", "bytes", "max |Δ| vs PyTorch", "top-1 agreement", "tolerance"), rows))
    mem = m["memory"]
    console.print(f"memory at batch {mem['batch']}: {mem['estimate_bytes'] / 2**20:.2f} MiB (weights "
                  f"{mem['weights_bytes'] / 2**20:.2f} + activations {mem['activation_peak_bytes'] / 2**20:.2f}) "
                  f"of a {mem['budget_bytes'] / 2**30:.3g} GiB budget")
    if "int8" in m["precisions"] and m.get("calibration"):
        console.print(f"INT8: {m['calibration']['count']} calibration inputs in {m['calibration']['file']} "
                      "(build the engine on the device with --engine)")
    console.print(f"bundle: [bold]{result.bundle}[/] ({len(m['files'])} files + manifest.json)")


@command
def verify(
    bundle: Path = typer.Argument(..., help="Bundle directory written by `edgerobust export`."),
    golden: bool = typer.Option(True, "--golden/--no-golden", help="Also re-run the golden inputs (onnxruntime)."),
) -> None:
    """Verify a deployment bundle: sha256 of every file, no extra files, and the golden outputs."""
    result = verify_bundle(bundle, run_golden=golden)
    console.print(f"[green]ok[/]: {result['files']} files match the manifest of {bundle}")
    for precision, figures in result.get("golden", {}).items():
        console.print(f"  {precision}: golden outputs reproduced (max |Δ| {figures['max_abs_diff']:.3g}, "
                      f"top-1 agreement {figures['top1_agreement']:.3f})")
