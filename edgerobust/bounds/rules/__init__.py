"""The bound rules, one file per operator family, registered in `RULES` by ONNX operator type."""
from . import (  # noqa: F401  (registers the rules)
    activation,
    affine,
    elementwise,
    normalization,
    pooling,
    quantize,
    shape,
    smooth,
)
from .base import RULES, SLACK, Linear, Rule, Unbounded

__all__ = ["RULES", "SLACK", "Linear", "Rule", "Unbounded"]
