"""The host's half of each precision record: how `export` makes its artifacts and how the error analysis models its
arithmetic, keyed by the runner's precision names.

The shared half (storage dtype, parity rule, TensorRT flag, file names) is edgerobust/runner/precisions.py, which the
device reads too. A host record holds its converters by artifact kind: "onnx" turns the fp32 ONNX graph into this
precision's graph (run by every onnxruntime runtime; fp32's is the graph itself), "engine" builds a TensorRT engine
from the fp32 graph with the precision's builder flag (export/tensorrt_build.py). int8 has both: onnxruntime's
quantize_static (export/quantize.py) for CPU targets and the TensorRT engine for GPU targets; a profile's `[int8]
runtime` says which one a target uses. A calibrated precision's converter takes the calibration context as keywords.
A precision with no converter (bf16, fp8) is one a profile may list but `export` cannot make yet. Adding a
precision: its runner record, one `HostPrecision` here, its converter.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EdgeRobustError, UnknownNameError
from ..runner.precisions import PRECISIONS, Precision
from .arithmetic import Arithmetic

ENGINE = "engine"  # the converter kind TensorRT builds on the target, from the fp32 graph (tensorrt_build.py)


def same_graph(proto: Any) -> Any:
    """The reference precision's converter: the exported fp32 graph is its artifact."""
    return proto


def tensorrt_engine(*args: Any, **kwargs: Any) -> dict:
    """The "engine" converter: tensorrt_build.build_engine(fp32 onnx, engine path, profile, precision, ...)."""
    from .tensorrt_build import build_engine

    return build_engine(*args, **kwargs)


def ort_int8(proto: Any, *, calibration: Any, input_shape: tuple[int, ...], settings: Any) -> Any:
    from .quantize import quantize_int8  # onnxruntime's quantize_static, loaded when an int8 graph is made

    return quantize_int8(proto, calibration, input_shape, settings)


def to_fp16(proto: Any) -> Any:
    from .fp16 import to_fp16 as convert  # onnxruntime's float16 converter, loaded when an fp16 graph is made

    return convert(proto)


@dataclass(frozen=True)
class HostPrecision:
    """What only the host knows of a precision: converters by artifact kind, arithmetic model, export parity."""

    name: str
    converters: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    arithmetic: Arithmetic | None = None  # None: no derived golden bound (finiteness, or the agreement rule)
    tolerance: float | None = None  # export parity against PyTorch (None: none checked at export)
    tolerance_kind: str = "absolute"  # or "relative" to the largest |logit|

    @property
    def record(self) -> Precision:
        return PRECISIONS[self.name]

    @property
    def exportable(self) -> bool:
        return bool(self.converters)

    def convert(self, proto: Any, **context: Any) -> Any | None:
        """This precision's ONNX graph made from the fp32 one, or None where it has no ONNX artifact (`context`: the
        calibration keywords of a calibrated precision's converter)."""
        convert = self.converters.get("onnx")
        return None if convert is None else convert(proto, **context)


HOST_PRECISIONS: dict[str, HostPrecision] = {}


def register(host: HostPrecision) -> HostPrecision:
    if host.name not in PRECISIONS:
        raise ValueError(f"precision {host.name} has no record in edgerobust/runner/precisions.py")
    HOST_PRECISIONS[host.name] = host
    return host


def host_precision(name: str) -> HostPrecision:
    """The host record of a precision of the table (a bare one where the host adds nothing yet)."""
    if name not in PRECISIONS:
        raise UnknownNameError("precision", name, PRECISIONS)
    return HOST_PRECISIONS.get(name) or HostPrecision(name)


def arithmetic_of(name: str) -> Arithmetic | None:
    """The arithmetic model the error analysis uses for `name` (None: the precision has none)."""
    return host_precision(name).arithmetic


def require_arithmetic(name: str) -> Arithmetic:
    arithmetic = arithmetic_of(name)
    if arithmetic is None:
        raise EdgeRobustError(f"precision {name} has no arithmetic model for the error analysis "
                              "(export/precisions.py); its parity is judged by its rule instead")
    return arithmetic


def exportable() -> list[str]:
    """The precisions `export` can make, in table order (the reference first)."""
    return [name for name in PRECISIONS if host_precision(name).exportable]


register(HostPrecision(
    "fp32", {"onnx": same_graph, ENGINE: tensorrt_engine},
    Arithmetic("fp32", 2.0 ** -24, 0.0, 0.0, 2.0 ** -150, float(np.finfo(np.float32).max)),
    tolerance=1e-4))  # absolute, on logits (ExportConfig.tolerance overrides it)
register(HostPrecision(
    "fp16", {"onnx": to_fp16, ENGINE: tensorrt_engine},
    # binary16 weights, input and arithmetic (native fp16 kernels, e.g. aarch64)
    Arithmetic("fp16", 2.0 ** -11, 2.0 ** -11, 2.0 ** -11, 2.0 ** -25, float(np.finfo(np.float16).max)),
    tolerance=1e-2, tolerance_kind="relative"))  # fp16 keeps ~3 significant digits
# int8: onnxruntime QDQ for CPU targets (calibrated at export), TensorRT engines for GPU targets (calibrated on the
# device from the bundle's calibration set); judged by the agreement rule, so no arithmetic model and no tolerance
register(HostPrecision("int8", {"onnx": ort_int8, ENGINE: tensorrt_engine}))
