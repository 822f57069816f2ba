"""The graph a run exports: traced from its PyTorch model, or — for a run imported from an ONNX file — that file.

An imported graph (imports/onnx_file.py: bundle names, dynamic batch, [0,1] pixels) is exported as given: kept at
its own opset where the target takes it, else converted down by onnx's version converter (refused in one line where
the converter cannot), then simplified and checked like a traced graph. Its golden tolerance is derived where every
operator has an error rule (export/tolerance.py); a foreign operator without one leaves the precision checked by
its parity tolerance, said so in the manifest, rather than failing the export.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from torch import nn

from ..errors import EdgeRobustError
from ..run import RunDir
from .bundle import save_golden_tolerances
from .onnx_export import opset_of, save_onnx, simplify, to_onnx

EXPORT_KEYS = ("model", "input", "mean", "std", "target")  # metadata export writes; an imported graph's are dropped


def is_imported_graph(run: RunDir) -> bool:
    return run.manifest.get("model", {}).get("format") == "onnx"


def imported_graph(run: RunDir, opset: int) -> onnx.ModelProto:
    """The run's ONNX file at an opset the target takes (its own when that is at most `opset`)."""
    info = run.manifest["model"]
    proto = onnx.load(str(run.file(str(info.get("file") or "model.onnx"))))
    own = opset_of(proto)
    if own > opset:
        proto = lowered(proto, own, opset)
    kept = [p for p in proto.metadata_props if p.key not in EXPORT_KEYS]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    return simplify(proto)


def lowered(proto: onnx.ModelProto, own: int, opset: int) -> onnx.ModelProto:
    """The graph at `opset`: onnx's version converter, or — where it lacks an adapter for an operator whose newer
    version only widened its types (Relu 14 added bfloat16) — the same nodes declared at `opset` if the ONNX checker
    accepts every node there. Either way the export's parity check then compares it with the imported graph."""
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(proto, opset)
        onnx.checker.check_model(converted, full_check=True)
        return converted
    except Exception as exc:  # noqa: BLE001  (the converter raises its own kinds for an adapter it lacks)
        reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
    relabelled = onnx.ModelProto.FromString(proto.SerializeToString())
    for entry in relabelled.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    try:
        onnx.checker.check_model(relabelled, full_check=True)
    except Exception:  # noqa: BLE001
        raise EdgeRobustError(f"the imported graph has opset {own} but the target takes at most {opset}, and onnx's "
                              f"version converter cannot lower it ({reason}); re-export it at opset {opset}") from None
    return relabelled


def graph_for_export(run: RunDir, model: nn.Module, input_shape: Sequence[int], opset: int) -> onnx.ModelProto:
    """What `export_run` bundles: the imported graph, or the model traced and simplified."""
    return imported_graph(run, opset) if is_imported_graph(run) else simplify(to_onnx(model, input_shape, opset))


def write_graph_for_bench(run: RunDir, module: nn.Module, input_shape: Sequence[int], path: Path,
                          opset: int) -> Path:
    """A temporary ONNX file for bench where the run has no export bundle (the imported graph, or a fresh export)."""
    if is_imported_graph(run):
        return save_onnx(imported_graph(run, opset), path)
    from .onnx_export import export_onnx

    return Path(export_onnx(module, input_shape, path, opset=opset, dynamic_batch=True))


def golden_tolerance_entries(run: RunDir, directory: Path, proto: Any, inputs: np.ndarray, precisions: list[str],
                             reference: np.ndarray) -> dict[str, Any]:
    """`save_golden_tolerances`; for an imported graph with an operator that has no error rule, entries saying the
    parity tolerance applies instead."""
    try:
        return save_golden_tolerances(directory, proto, inputs, precisions, reference)
    except EdgeRobustError as exc:
        if not is_imported_graph(run):
            raise
        note = f"no derived bound ({exc}); checked by the parity tolerance"
        return {p: {"file": None, "max": None, "kind": "parity tolerance", "note": note} for p in precisions}
