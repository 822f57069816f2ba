"""Bringing in what users already have: weights trained elsewhere (weights.py) and ONNX classifiers (onnx_file.py)."""
from .onnx_file import OnnxImportError, import_onnx
from .setup import ImportSetup
from .weights import import_weights, read_state_dict

__all__ = ["ImportSetup", "OnnxImportError", "import_onnx", "import_weights", "read_state_dict"]
