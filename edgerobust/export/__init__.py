"""Export for a target device: ONNX (+ fp16), parity against PyTorch, memory check, TensorRT, deployment bundle."""
from .onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, opset_of, to_onnx
from .operators import check_operators, graph_operators, unsupported_operators

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "check_operators", "export_onnx", "graph_operators",
           "opset_of", "to_onnx", "unsupported_operators"]
