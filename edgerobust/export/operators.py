"""Which ONNX operators a target's preferred runtime can run, and the check that refuses the rest.

The TensorRT sets are the operators marked supported in onnx-tensorrt's docs/operators.md (the 8.4 table for
TensorRT 8.2/8.4 at opset <= 13, the 8.5 table for newer parsers, a conservative subset of TensorRT 10). No
library publishes these lists in machine-readable form, so they are kept here; "onnx" means any standard operator
(onnxruntime runs them all, and the parity check runs the graph through onnxruntime anyway).
"""
from __future__ import annotations

from collections import Counter

import onnx

from ..errors import EdgeRobustError
from ..registry import Registry

_TENSORRT_8_4 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip Concat
Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu
Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg
NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform RandomUniformLike Range
ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
Relu Reshape Resize ReverseSequence RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu
Tile TopK Transpose Unsqueeze Upsample Where Xor
""".split())

_TENSORRT_8_5 = _TENSORRT_8_4 | frozenset("""
GridSample HardSwish MeanVarianceNormalization Mod NonZero OneHot RandomNormal RandomNormalLike Reciprocal RoiAlign
Shrink Trilu
""".split())

# None = every operator of the standard ONNX domain.
OPERATOR_SETS: Registry[frozenset[str] | None] = Registry("operator set")
OPERATOR_SETS.register("onnx", "any standard ONNX operator (onnxruntime)")(None)
OPERATOR_SETS.register("tensorrt-8.2", "ONNX-TensorRT 8.2/8.4 parser (opset <= 13)")(_TENSORRT_8_4)
OPERATOR_SETS.register("tensorrt-8.5", "ONNX-TensorRT 8.5+ parser (also a conservative set for TensorRT 10)")(
    _TENSORRT_8_5)


def graph_operators(model: onnx.ModelProto) -> Counter[tuple[str, str]]:
    """(domain, op_type) -> count over the graph and its subgraphs."""
    counts: Counter[tuple[str, str]] = Counter()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[(node.domain or "", node.op_type)] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    return counts


def unsupported_operators(model: onnx.ModelProto, operator_set: str) -> list[str]:
    allowed = OPERATOR_SETS.get(operator_set)
    bad = []
    for domain, op in sorted(graph_operators(model)):
        standard = domain in ("", "ai.onnx") and onnx.defs.has(op)
        if not standard or (allowed is not None and op not in allowed):
            bad.append(op if domain in ("", "ai.onnx") else f"{domain}::{op}")
    return bad


def check_operators(model: onnx.ModelProto, operator_set: str, target: str, runtime: str) -> None:
    """Refuse a graph the target's runtime cannot run, naming the operator(s)."""
    bad = unsupported_operators(model, operator_set)
    if bad:
        raise EdgeRobustError(f"target '{target}' cannot run operator{'s' if len(bad) > 1 else ''} {', '.join(bad)} "
                              f"({runtime}, operator set {operator_set}); replace the layer that produces it "
                              "or choose another target")
