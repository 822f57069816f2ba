"""The arithmetic model of a precision for the error analysis (export/tolerance.py): unit roundoffs after Higham,
*Accuracy and Stability of Numerical Algorithms* (2002), ch. 2-3. Each precision's host record
(export/precisions.py) holds one."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Arithmetic:
    """How an artifact of one precision computes: unit roundoffs of its arithmetic, weights and input cast."""

    name: str
    unit_roundoff: float  # u of the arithmetic (worst case: every operation in this precision)
    weight_roundoff: float  # rounding of stored weights and constants relative to the fp32 model
    input_roundoff: float  # rounding of the float32 input when the graph casts it
    underflow: float  # η_min: half the smallest subnormal
    largest: float  # overflow threshold

    def gamma(self, n: int) -> float:
        nu = n * self.unit_roundoff
        return nu / (1.0 - nu) if nu < 1.0 else math.inf
