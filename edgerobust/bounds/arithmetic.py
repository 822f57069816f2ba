"""Arithmetic models: how an artifact computes, as the unit roundoffs a forward error analysis needs.

Standard model (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., 2002, ch. 2-3):
fl(x op y) = (x op y)(1 + δ), |δ| <= u, plus η_min for gradual underflow; a dot product of length n accumulated in
precision u has |fl(wᵀx) - wᵀx| <= γ_n |w|ᵀ|x|, γ_n = n·u / (1 - n·u), **whatever the summation order** (eq. 3.5),
so every model here holds for any order, blocking or FMA use of the kernel. A model whose intermediate tensors are
stored in a narrower type than it accumulates in rounds each stored result once more (`storage_roundoff`).

Models (`ARITHMETIC_MODELS`): `real` (exact reals: the certificate of the real-valued function), `fp32`,
`fp16-fp32acc` (binary16 tensors, binary32 accumulation inside each kernel: x86 onnxruntime, tensor cores) and
`fp16` (binary16 accumulation, any summation order: native fp16 kernels, e.g. aarch64). The last is vacuous at real
fan-ins (γ_576 ≈ 0.39, no finite bound from n = 2048): certificates say so instead of printing a number.
`int8` is onnxruntime's QDQ artifact (bounds/quantized.py, rules/quantize.py): integer tensors between float32
segments and fused integer kernels; its `kernels` field states what the bound assumes of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..registry import Registry

U32, U16 = 2.0 ** -24, 2.0 ** -11
SUMMATION_ORDER = "any order (Higham (3.5): recursive, pairwise, blocked, FMA or not)"


@dataclass(frozen=True)
class Arithmetic:
    """How an artifact of one precision computes: unit roundoffs of its arithmetic, storage, weights and input.

    `weight_roundoff` and `input_roundoff` model an fp32 graph converted to a narrower type (the golden tolerance
    analyses the fp32 graph for every precision); an artifact read with its own narrow initialisers has them exact.
    """

    name: str
    unit_roundoff: float  # u of the accumulation (every operation inside a kernel)
    weight_roundoff: float  # rounding of stored weights and constants relative to the analysed graph
    input_roundoff: float  # rounding of the float32 input when the artifact casts it
    underflow: float  # η_min: half the smallest subnormal of the narrowest type in play
    largest: float  # overflow threshold of the narrowest type in play
    storage_roundoff: float | None = None  # rounding of each stored result; None: the same as unit_roundoff
    summation: str = SUMMATION_ORDER
    kernels: str = ""  # what the model assumes of the runtime's kernels beyond the roundoffs (int8), "" if nothing

    def gamma(self, n: int) -> float:
        nu = n * self.unit_roundoff
        return nu / (1.0 - nu) if nu < 1.0 else math.inf

    @property
    def store(self) -> float:
        """Extra rounding when a kernel's result is stored (0 where storage and accumulation agree)."""
        s = self.unit_roundoff if self.storage_roundoff is None else self.storage_roundoff
        return s if s > self.unit_roundoff else 0.0

    def kernel(self, n: int) -> float:
        """Relative error of one kernel output that sums n products (or n values): accumulate, then store."""
        g = self.gamma(n)
        return g + self.store * (1.0 + g)

    def dot(self, n: int) -> float:
        """Relative factor of a dot product of length n with rounded weights: u_w + (1 + u_w)·kernel(n)."""
        return self.weight_roundoff + self.kernel(n) * (1.0 + self.weight_roundoff)

    @property
    def single(self) -> float:
        """One elementwise operation: computed, then stored."""
        return self.kernel(1)

    def describe(self) -> dict:
        return {"name": self.name, "accumulation_u": self.unit_roundoff,
                "storage_u": self.unit_roundoff if self.storage_roundoff is None else self.storage_roundoff,
                "weight_u": self.weight_roundoff, "input_u": self.input_roundoff, "summation_order": self.summation,
                "overflow_threshold": self.largest, **({"kernels": self.kernels} if self.kernels else {})}

    def vacuous_fan_in(self) -> int | None:
        """The smallest fan-in where γ_n is infinite (n·u >= 1); None for exact arithmetic."""
        return None if self.unit_roundoff == 0 else math.ceil(1.0 / self.unit_roundoff)


F32_MAX, F16_MAX = float(np.finfo(np.float32).max), float(np.finfo(np.float16).max)
ARITHMETIC_MODELS: Registry[Arithmetic] = Registry("arithmetic model")
ARITHMETIC_MODELS.register("real", "exact real arithmetic: the certificate of the artifact's real-valued function")(
    Arithmetic("real", 0.0, 0.0, 0.0, 0.0, math.inf))
ARITHMETIC_MODELS.register("fp32", "IEEE binary32 storage and accumulation")(
    Arithmetic("fp32", U32, 0.0, 0.0, 2.0 ** -150, F32_MAX))
ARITHMETIC_MODELS.register("fp16-fp32acc", "binary16 tensors, binary32 accumulation inside each kernel")(
    Arithmetic("fp16-fp32acc", U32, 0.0, 0.0, 2.0 ** -25, F16_MAX, storage_roundoff=U16))
ARITHMETIC_MODELS.register("fp16", "binary16 tensors and accumulation (native fp16 kernels, e.g. aarch64)")(
    Arithmetic("fp16", U16, 0.0, 0.0, 2.0 ** -25, F16_MAX))

# int8: the roundoffs of the float32 segments of a QDQ graph (unfused DequantizeLinear -> op -> QuantizeLinear), with
# weights and constants "rounded" by INT8_KERNEL_U: the fused kernels' requantization error relative to the
# magnitude of their terms (bounds/quantized.py derives it; QuantizeLinear's window holds all of it).
INT8_KERNEL_U = 2.0 ** -20
INT8_KERNELS = (
    "onnxruntime QDQ int8 (CPU execution provider, any graph optimisation level): a QuantizeLinear rounds a value "
    "within its window of the exact x/s, either way at a tie; fused integer kernels (QLinearConv, QGemm, "
    "QLinearMatMul, QLinearAdd, QLinearGlobalAveragePool, ...) accumulate exactly in int32 (checked: no overflow "
    "for the artifact's weights and ranges) with no 16-bit saturation of u8 x s8 pair sums (x86 with VNNI or AMX, "
    "or weights within ±64, i.e. reduce_range, without; aarch64 widens before adding), then requantize through "
    "float32 scale ratios (at most 8 roundings) or a fixed-point multiplier of at least 21 bits (aarch64 "
    "QLinearAdd): the value rounded lies within 2^-20 of its terms' magnitude; unfused segments run in float32 "
    "(Higham's model, any summation order)")
ARITHMETIC_MODELS.register("int8", "onnxruntime's QDQ int8 kernels: exact int32 accumulation, float32 "
                                   "requantization, float32 between")(
    Arithmetic("int8", U32, INT8_KERNEL_U, 0.0, 2.0 ** -150, F32_MAX, kernels=INT8_KERNELS))
