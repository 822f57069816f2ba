"""Which ONNX operators a device's runtime can run: `OPERATOR_SETS`, facts about devices that profiles name.

The TensorRT sets are the operators marked supported in onnx-tensorrt's docs/operators.md (the 8.4 table for
TensorRT 8.2/8.4 at opset <= 13, the 8.5 table for newer parsers, a conservative subset of TensorRT 10). No
library publishes these lists in machine-readable form, so they are kept here; "onnx" means any standard operator
(onnxruntime runs them all, and the parity check runs the graph through onnxruntime anyway). The check that refuses
a graph with other operators is `edgerobust.export.operators.check_operators`.
"""
from __future__ import annotations

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
