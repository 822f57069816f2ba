"""onnxruntime int8 for CPU targets: onnxruntime's own pre-processing and `quantize_static`, QDQ format.

The fp32 graph goes through `quant_pre_process` (shape inference and onnxruntime's graph optimisation, which folds
batch norm into the convolutions) and `quantize_static` with per-channel symmetric int8 weights and uint8 activations
whose ranges come from the bundle's calibration set, read by a `CalibrationDataReader` (method minmax, entropy or
percentile). Nothing of what onnxruntime.quantization does is written here: this module only feeds it, names its
settings and turns its failures into one line. `reduce_range` (7-bit weights) is for x86 CPUs without VNNI, where
onnxruntime's u8 x s8 kernels add pairs of products in 16 bits and can saturate (the profile's `[int8]` table says
whether a target needs it).

Mixed precision (`Int8Settings.exclude`, `export --int8-exclude`): operators named there stay float32 (quantize_static's
`nodes_to_exclude`), read the float tensor rather than its DequantizeLinear (`feed_float_operators`: onnxruntime's
optimiser would otherwise quantize their weights itself) and feed a QuantizeLinear. `auto` names the convolutions that
onnxruntime's x86 int8 kernels run slower than float32: MLAS's symmetric int8 convolution (ConvSym, AVX2/AVX-512
VNNI, `MlasConvSymPackWSize`) takes a convolution only with 16 or more output channels, output channels a multiple
of 8 and input channels a multiple of 4 (depthwise: channels a multiple of 16); any other falls back to im2col and
a u8s8 GEMM, which on thin layers (a CIFAR stem with 3 input channels, filter-pruned layers of 8) costs more than
the fp32 NCHWc convolution (benchmarks/product_figure.py records the per-layer profile). The float operators are
named in the artifact's metadata and the bundle manifest (`float_operators`). The rule knows kernels, not
graphs: a float layer adds a QuantizeLinear and layout changes after it, and onnxruntime moves a QuantizeLinear
above a following MaxPool, which then runs as slow uint8 NCHW pooling (VGG-small's stem: 2.9 ms against 0.08 ms).
`measure` makes both graphs, every operator int8 and `auto`, times each with and without onnxruntime's NCHWc layout
pass (1 thread, fastest of a few interleaved calls on a calibration batch) and keeps the fastest of the four,
recording all times; when skipping the pass wins, the artifact's metadata says so and every session that opens it
skips it (runner/ort_options.py: thin float32 layers pay for the pass's 16-channel blocks and reorders).

Marshall (thesis ch. 4) deploys with TensorRT int8 on the Jetson's GPU; this is the same lever for the CPU targets.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import EdgeRobustError, ShapeError
from ..runner.ort_options import DISABLED_KEY
from ..runner.precisions import CALIBRATION_METHODS as METHODS
from .onnx_export import INPUT_NAME

CALIBRATION_BATCH = 32  # inputs per calibration call (the graph has a dynamic batch)


class QuantizationError(EdgeRobustError):
    """onnxruntime's quantizer could not quantize the graph (the operator it stopped at is named)."""


@dataclass(frozen=True)
class Int8Settings:
    """The quantizer settings recorded in the bundle: method, reduce_range, and what onnxruntime is told."""

    method: str = "minmax"
    reduce_range: bool = False
    per_channel: bool = True
    format: str = "QDQ"
    weights: str = "int8, symmetric"
    activations: str = "uint8, asymmetric"
    qat: dict[str, Any] | None = None  # a QAT run's record (training/qat.py): its scales, not calibrated ones
    exclude: str = "none"  # operators left float32: none, auto (KERNEL_RULE), measure, or comma-separated names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EXCLUDE_RULES = ("none", "auto", "measure")
MEASURE_ROUNDS = 7  # interleaved calls of each graph when `measure` chooses
KERNEL_RULE = ("convolutions outside onnxruntime's x86 symmetric int8 kernel (MLAS ConvSym): fewer than 16 output "
               "channels, output channels not a multiple of 8 or input channels not a multiple of 4 (depthwise: "
               "channels not a multiple of 16)")


def _conv_channels(proto: onnx.ModelProto) -> dict[str, tuple[int, int, int]]:
    """(output channels, input channels per group, groups) of each Conv with a constant weight, by node name."""
    shapes = {init.name: tuple(init.dims) for init in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        if node.op_type == "Conv" and node.input[1] in shapes and len(shapes[node.input[1]]) >= 3:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out[node.name] = (shapes[node.input[1]][0], shapes[node.input[1]][1], group)
    return out


def slow_int8_convolutions(proto: onnx.ModelProto) -> list[str]:
    """The Conv nodes KERNEL_RULE names: where onnxruntime's x86 int8 convolution leaves its fast kernel."""
    slow = []
    for name, (cout, cin, group) in _conv_channels(proto).items():
        if group > 1:
            fast = cin == 1 and cout == group and group % 16 == 0
        else:
            fast = cout >= 16 and cout % 8 == 0 and cin % 4 == 0
        if not fast:
            slow.append(name)
    return slow


def excluded_nodes(proto: onnx.ModelProto, exclude: str) -> list[str]:
    """The node names `exclude` (none, auto or comma-separated names) leaves in float; an unknown name is refused."""
    rule = (exclude or "none").strip()
    if rule in ("none", "measure"):  # measure: quantize_int8 makes the none and auto graphs and times them
        return []
    if rule == "auto":
        return slow_int8_convolutions(proto)
    names = [n.strip() for n in rule.split(",") if n.strip()]
    known = {node.name for node in proto.graph.node if node.name}
    unknown = [n for n in names if n not in known]
    if unknown:
        convs = sorted(_conv_channels(proto))
        raise EdgeRobustError(f"--int8-exclude names no node {', '.join(unknown)} of the graph; give none, auto or "
                              f"node names such as {', '.join(convs[:3]) or 'the Conv nodes'}")
    return names


def float_operators(quantized: onnx.ModelProto) -> list[str]:
    """Conv / Gemm / MatMul nodes of a QDQ graph whose weight is not dequantized int8: they run in float32."""
    dequantized = {out for node in quantized.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.name for node in quantized.graph.node if node.op_type in ("Conv", "Gemm", "MatMul")
            and len(node.input) > 1 and node.input[1] not in dequantized]


def feed_float_operators(quantized: onnx.ModelProto) -> None:
    """Give every float operator its input before the QuantizeLinear -> DequantizeLinear pair quantize_static puts on
    a tensor it shares with a quantized consumer, and drop the pairs nobody reads any more. A float Conv / Gemm whose
    input comes from a per-tensor DequantizeLinear is quantized by onnxruntime's own session optimiser from 1.20 on
    (WeightBiasQuantization: per-tensor int8 weights, int32 bias) and by older versions not at all, so the layer the
    user kept in float would run in an arithmetic that depends on the runtime's version; reading the float tensor it
    runs in float32 everywhere, as excluded (and as the bound engine models it)."""
    graph = quantized.graph
    producers = {out: node for node in graph.node for out in node.output}
    floats = set(float_operators(quantized))
    for node in graph.node:
        dq = producers.get(node.input[0]) if node.name in floats else None
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            node.input[0] = q.input[0]
    while True:  # the pairs left without a reader, then their constants
        read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        dead = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(out in read for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def int8_record(quantized: onnx.ModelProto) -> dict[str, Any]:
    """What quantize_int8 wrote in the artifact's `int8` metadata (settings, float operators, measured times)."""
    import ast

    text = next((p.value for p in quantized.metadata_props if p.key == "int8"), "{}")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}


def check_calibration(images: np.ndarray | None, input_shape: tuple[int, ...]) -> np.ndarray:
    """The calibration images as float32 N×C×H×W of the model's input shape; empty or another shape is refused."""
    if images is None or len(images) == 0:
        raise ShapeError("int8 needs a calibration set and it is empty; export with --calibration N (N > 0)")
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ShapeError(f"calibration set holds inputs of shape {tuple(images.shape[1:])} but the model takes "
                         f"{tuple(input_shape)}; calibrate with images of the model's dataset")
    if not np.isfinite(images).all():
        raise ShapeError("calibration set holds non-finite values; calibrate with real images in [0,1]")
    return np.ascontiguousarray(images, dtype=np.float32)


def _reader(images: np.ndarray) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """The calibration set in batches of CALIBRATION_BATCH, once through."""

        def __init__(self) -> None:
            self.batches = iter([images[i:i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return Reader()


def _named_failure(exc: Exception, proto: onnx.ModelProto) -> str:
    """The operator a quantizer failure names (by node name or op type), for one line."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    nodes = {node.name: node.op_type for node in proto.graph.node if node.name}
    named = sorted((name for name in nodes if name in text), key=len)  # the longest name a message quotes
    if named:
        return f"operator {nodes[named[-1]]} (node {named[-1]}): {text}"
    ops = sorted({node.op_type for node in proto.graph.node if re.search(rf"\b{node.op_type}\b", text)})
    return f"operator {ops[0]}: {text}" if ops else text


def qat_quantizer_options(proto: onnx.ModelProto, record: dict[str, Any],
                          excluded: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """What onnxruntime's quantizer is told for a QAT run: only Conv and Gemm quantized (their inputs, weights, bias
    and outputs: the points the fake-quant model quantizes), with the run's learned scales and zero points as
    `TensorQuantOverrides` on the activation tensors instead of calibrated ones. Each Conv/Gemm node is matched to
    its torch module by the name torch's exporter gives it (training/qat.py `onnx_node_name`); the `excluded` nodes
    (mixed precision) stay float and get no overrides of their own."""
    from ..training.qat import onnx_node_name

    points = record.get("points") or {}
    by_node = {onnx_node_name(name, op): name for name in points for op in ("Conv", "Gemm")}
    overrides: dict[str, list[dict[str, Any]]] = {}
    found = set()
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        name = by_node.get(node.name)
        if name is None:
            raise QuantizationError(f"the QAT run has no quantizer for operator {node.op_type} (node {node.name}): "
                                    "it is not one of the model's Conv2d/Linear modules; export the run without "
                                    "int8 or train it without --qat")
        found.add(name)
        if node.name in excluded:
            continue
        for tensor, (scale, zero) in ((node.input[0], points[name]["input"]), (node.output[0], points[name]["output"])):
            overrides.setdefault(tensor, [{"scale": np.array(scale, dtype=np.float32),
                                                 "zero_point": np.array(zero, dtype=np.uint8)}])
    missing = sorted(set(points) - found)
    if missing:
        raise QuantizationError(f"the exported graph has no Conv/Gemm node for the QAT modules {', '.join(missing)}; "
                                "the run's QAT record was written for another graph")
    return {"op_types_to_quantize": ["Conv", "Gemm"], "extra_options": {"TensorQuantOverrides": overrides}}


def fastest_call_ms(candidates: dict[str, tuple[onnx.ModelProto, list[str]]], batch: np.ndarray,
                    rounds: int = MEASURE_ROUNDS) -> dict[str, float]:
    """Each candidate's fastest call (ms) on `batch`: its graph in an onnxruntime CPU session with the runner's
    settings (1 thread) less its skipped optimisers, the candidates called in turn round by round so the host's
    load hits all alike."""
    import time

    import onnxruntime as ort

    from ..runner.ort_options import session_options

    sessions = {name: ort.InferenceSession(graph.SerializeToString(), session_options(ort, 1),
                                           providers=["CPUExecutionProvider"], disabled_optimizers=skip)
                for name, (graph, skip) in candidates.items()}
    best = dict.fromkeys(sessions, float("inf"))
    for _ in range(rounds + 1):  # the first round warms up and counts like the others (its min is rarely lowest)
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {INPUT_NAME: batch})
            best[name] = min(best[name], 1e3 * (time.perf_counter() - start))
    return best


def quantize_int8(proto: onnx.ModelProto, calibration: np.ndarray, input_shape: tuple[int, ...],
                  settings: Int8Settings = Int8Settings()) -> onnx.ModelProto:
    """The QDQ int8 graph of `proto` (fp32, input `input`), calibrated on `calibration` (N×C×H×W pixels). With
    `exclude="measure"` the every-operator graph and the `auto` one are both made and timed here, with and without
    the NCHWc layout pass (`fastest_call_ms`, a calibration batch), and the fastest is returned, with the pass
    skipped in its metadata where that won: the kernel rule's candidates stay float
    only where that pays on this host as a whole graph (a float layer adds its QuantizeLinear and layout changes,
    and onnxruntime moves a QuantizeLinear above a following MaxPool, which then runs as uint8 NCHW pooling)."""
    if (settings.exclude or "").strip() == "measure":
        graphs = {"int8": quantize_int8(proto, calibration, input_shape, replace(settings, exclude="none")),
                  "mixed": quantize_int8(proto, calibration, input_shape, replace(settings, exclude="auto"))}
        if not float_operators(graphs["mixed"]):
            del graphs["mixed"]
        candidates = {f"{name}{suffix}": (graph, skip) for name, graph in graphs.items()
                      for suffix, skip in (("", []), ("/no-nchwc", ["NchwcTransformer"]))}
        times = fastest_call_ms(candidates, check_calibration(calibration, input_shape)[:CALIBRATION_BATCH])
        chosen = min(times, key=times.get)
        graph, skip = candidates[chosen]
        record = {**settings.to_dict(), "float_operators": float_operators(graph), "disabled_optimizers": skip,
                  "measured_fastest_call_ms": {k: round(v, 4) for k, v in times.items()}, "chosen": chosen}
        for prop in graph.metadata_props:
            if prop.key == "int8":
                prop.value = str(record)
        if skip:  # every session that opens the artifact reads it (runner/ort_options.py)
            graph.metadata_props.add(key=DISABLED_KEY, value=",".join(skip))
        return graph
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if settings.method not in METHODS:
        raise EdgeRobustError(f"unknown int8 calibration method '{settings.method}'; valid: {', '.join(METHODS)}")
    images = check_calibration(calibration, input_shape)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.method]
    quiet = logging.getLogger().level
    with tempfile.TemporaryDirectory(prefix="edgerobust-int8-") as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
        warnings.simplefilter("ignore")  # the quantizer warns about its own defaults; the bundle records them
        logging.getLogger().setLevel(logging.ERROR)
        source, prepared, output = (Path(tmp) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save_model(proto, str(source))
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            prepared_proto = onnx.load_model(str(prepared))
            excluded = excluded_nodes(prepared_proto, settings.exclude)
            qat_options = {} if settings.qat is None else qat_quantizer_options(prepared_proto, settings.qat,
                                                                                         excluded)
            quantize_static(str(prepared), str(output), _reader(images), quant_format=QuantFormat.QDQ,
                            per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_exclude=excluded,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                           **qat_options.get("extra_options", {})},
                            **{k: v for k, v in qat_options.items() if k != "extra_options"})
        except EdgeRobustError:
            raise
        except Exception as exc:  # noqa: BLE001  (onnxruntime's quantizer raises plain exceptions with the reason)
            raise QuantizationError(f"onnxruntime cannot quantize the graph to int8: {_named_failure(exc, proto)}; "
                                    "export without int8 (--no-int8)") from None
        finally:
            logging.getLogger().setLevel(quiet)
        quantized = onnx.load_model(str(output))
    feed_float_operators(quantized)
    if not any(node.op_type == "QuantizeLinear" for node in quantized.graph.node):
        raise QuantizationError("onnxruntime's quantizer left no operator quantized (the graph's operators "
                                f"{sorted({n.op_type for n in proto.graph.node})} have no int8 kernels); "
                                "export without int8 (--no-int8)")
    del quantized.metadata_props[:]
    for prop in proto.metadata_props:
        quantized.metadata_props.add(key=prop.key, value=prop.value)
    quantized.metadata_props.add(key="int8", value=str({**settings.to_dict(),
                                                        "float_operators": float_operators(quantized)}))
    quantized.producer_name = proto.producer_name or quantized.producer_name
    return quantized
