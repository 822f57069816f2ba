"""PyTorch -> ONNX at a chosen opset: dynamic batch, normalisation inside, constant-folded, simplified, checked.

Uses the TorchScript exporter (dynamo=False): the dynamo exporter starts at opset 18 and cannot reliably go down to
the opset 13 that TensorRT 8.2 on a Jetson Nano needs.
"""
from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnxslim
import torch
from torch import nn

from ..devices.profile import MAX_OPSET, MIN_OPSET
from ..errors import EdgeRobustError
from ..io import atomic_path
from .operators import check_operators

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def to_onnx(model: nn.Module, input_shape: Sequence[int], opset: int, dynamic_batch: bool = True,
            example_batch: int = 2) -> onnx.ModelProto:
    """Export in memory; the graph takes [0,1] pixels (the model's own Normalize layer is part of it).

    Traced on a CPU float32 copy whatever device the model is on: the graph does not depend on it, and the
    caller's model stays where it was."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise EdgeRobustError(f"opset {opset} is outside the exporter's range {MIN_OPSET}..{MAX_OPSET}")
    model = copy.deepcopy(model).eval().cpu().float()  # a copy: the caller's model keeps its mode and device
    example = torch.rand(example_batch, *input_shape)
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice, on every call
            torch.onnx.export(model, (example,), buffer, opset_version=opset, dynamo=False, do_constant_folding=True,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)
    except (torch.onnx.errors.UnsupportedOperatorError, torch.onnx.errors.SymbolicValueError) as exc:
        raise EdgeRobustError(f"the model cannot be exported at opset {opset}: {_first_line(exc)}; "
                              "try a higher --opset (if the target takes one) or replace that layer") from None
    except RuntimeError as exc:
        raise EdgeRobustError(f"ONNX export failed at opset {opset}: {_first_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue())


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and graph simplification (onnxslim), then the ONNX checker with shape inference."""
    opset = opset_of(proto)
    slim = onnxslim.slim(proto)
    if opset_of(slim) != opset:  # onnxslim must not silently raise the opset past the target's limit
        raise EdgeRobustError(f"simplification changed the opset from {opset} to {opset_of(slim)}")
    check(slim)
    return slim


def check(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EdgeRobustError(f"the exported graph fails the ONNX checker: {_first_line(exc)}") from None


def opset_of(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def save_onnx(proto: onnx.ModelProto, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path, opset: int = 17,
                dynamic_batch: bool = True, operator_set: str | None = None, target: str = "",
                metadata: dict[str, str] | None = None) -> Path:
    """Export `model` to a checked, simplified ONNX file at `path` (written atomically).

    With `operator_set` (a device profile's), a graph holding an operator the target cannot run is refused.
    """
    proto = simplify(to_onnx(model, input_shape, opset, dynamic_batch))
    if operator_set:
        check_operators(proto, operator_set, target or "this target", operator_set)
    proto.producer_name = "edgerobust"
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=str(value))
    return save_onnx(proto, path)
