"""The bound rules, one file per operator family, registered in `RULES` by ONNX operator type."""
from . import activation, affine, elementwise, pooling, quantize, shape, smooth  # noqa: F401  (registers the rules)
from .base import RULES, SLACK, Linear, Rule, Unbounded

__all__ = ["RULES", "SLACK", "Linear", "Rule", "Unbounded"]
