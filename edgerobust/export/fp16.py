"""fp16 conversion with onnxruntime's own float16 converter (shipped in onnxruntime.transformers, maintained with it).

Inputs and outputs stay float32 (keep_io_types) so the same golden inputs feed every precision and the device
runner needs no casts; everything inside runs in fp16.
"""
from __future__ import annotations

import warnings

import onnx
import onnxslim

from ..errors import EdgeRobustError


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "value out of fp16 range, clamped" is reported by parity instead
            half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:  # the converter raises plain exceptions with the reason
        raise EdgeRobustError(f"fp16 conversion failed: {str(exc).strip()[:200]}") from None
    # The converter appends its input Casts after the nodes that read them; onnxslim re-sorts the graph.
    half = onnxslim.slim(half)
    onnx.checker.check_model(half, full_check=True)
    return half
