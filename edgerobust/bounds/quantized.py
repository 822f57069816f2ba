"""The int8 (QDQ) kernel model: the window of every QuantizeLinear, from one static pass over the whole input box.

A QDQ artifact alternates exact integer tensors with float segments (DequantizeLinear -> operators ->
QuantizeLinear). onnxruntime runs a segment either unfused, in float32, or fused into an integer kernel
(QLinearConv, QGemm, QLinearMatMul, QLinearAdd, QLinearGlobalAveragePool, ...): int32 accumulation, then the sum
times a float32 scale ratio s_x·s_w/s_y (computed in float32, bias added as int32 at the scale s_x·s_w although
the graph stores it at float32(s_x·s_w)), rounded to nearest (MLAS RequantizeOutput; QLinearAdd on aarch64 through
a fixed-point multiplier of 21 to 22 bits). Either way the value the kernel rounds differs from the exact x / s by
little, and by an amount bounded without knowing the input: the integer tensors are bounded by their type's range
and the graph input by the [0, 1] box. So each QuantizeLinear gets, once per graph, a window w (steps, per element)
with |value rounded - x/s| <= w for every input in the box:

    w·s = e + ρ·(a + r),  ρ = INT8_KERNEL_U = 2^-20

* e: the float32 forward error of the segment (the engine's own error rules under the `int8` arithmetic: binary32
  operations, each DequantizeLinear output rounded once, weights "rounded" by ρ, which bounds the fused
  convolution's and GEMM's requantization, ≤ γ_6·(|W||x| + |b|) with the bias-scale mismatch, by the dot product's
  term magnitude), with |x| from interval bounds over the box;
* ρ·a, a >= |x|: the division x / s (unfused), or a kernel that sums exactly and scales once (pooling,
  requantization of a move);
* ρ·r for an Add or Sub of two dequantized tensors: QLinearAdd works on the raw integers (x86: float32
  a·s_a/s_c + b·s_b/s_c + (z_c - ...); aarch64: the fixed-point multipliers), so its error scales with
  r = Σ s_in·(largest |q| + |z_in|) rather than with |x|.

ρ = 2^-20 is at least 16 float32 roundings and 2 units of a 21-bit multiplier: every kernel above rounds less. The
same pass checks that no int32 accumulator can overflow (Σ|w_q|·max|q_x - z_x| + |b_q| < 2^31). The window makes the
QuantizeLinear rule's bounds hold for the exact QDQ function and for the kernel at once (rules/quantize.py).
"""
from __future__ import annotations

import math

import torch

from .graph import BoundError, Graph

ACCUMULATOR = 2 ** 31 - 1
MOVES = ("Flatten", "Reshape", "Transpose", "Identity", "Dropout", "MaxPool")  # keep values on their grid


def _producers(graph: Graph) -> dict:
    return {n.outputs[0]: n for n in graph.nodes}


def _raw(node, producers) -> torch.Tensor | float:
    """r of an Add/Sub of dequantized tensors (module docstring); 0 for any other producer."""
    from .rules.quantize import RANGES

    if node is None or node.op not in ("Add", "Sub") or len(node.dynamic) != 2:
        return 0.0
    total = 0.0
    for name in node.dynamic:
        source = producers.get(name)
        if source is None or source.op != "DequantizeLinear":
            continue
        s, z = source.const(1), source.const(2)
        low, high = RANGES.get(torch.uint8 if z is None else z.dtype, (0, 0))
        zero = 0.0 if z is None else float(z.abs().max())
        total += float(s.max()) * (max(abs(low), abs(high)) + zero)
    return total


def on_grid(node, producers) -> bool:
    """Whether a QuantizeLinear requantizes values already on its own grid: its input is a DequantizeLinear with the
    same scale, zero point and type, through operators that only move or select values. Its output is then the
    input's integers (up to its window, far from a tie), and CROWN need not tighten its input."""
    source = producers.get(node.dynamic[0])
    while source is not None and source.op in MOVES:
        source = producers.get(source.dynamic[0]) if source.dynamic else None
    if source is None or source.op != "DequantizeLinear":
        return False
    same = [(a is None and b is None) or (a is not None and b is not None and a.dtype == b.dtype
                                           and a.shape == b.shape and bool((a == b).all()))
            for a, b in ((node.const(1), source.const(1)), (node.const(2), source.const(2)))]
    return all(same) and node.attr("axis", 1) == source.attr("axis", 1)


def check_float_weights(graph: Graph, node, producers) -> None:
    """Refuse a float32 Conv / ConvTranspose / Gemm with constant float weights reading a per-tensor DequantizeLinear:
    onnxruntime's session optimiser quantizes such a layer itself from 1.20 on (WeightBiasQuantization: per-tensor
    int8 weights, int32 bias) and older versions run it in float, so its arithmetic depends on the runtime's version.
    edgerobust's exports feed float layers their float input (export/quantize.py `feed_float_operators`)."""
    source = producers.get(node.inputs[0])
    weight = node.inputs[1] if len(node.inputs) > 1 else ""
    if (source is not None and source.op == "DequantizeLinear" and source.const(1) is not None
            and source.const(1).numel() == 1 and weight in node.consts and weight not in graph.quantized):
        raise BoundError(f"{node.label()}: a float32 layer reading a DequantizeLinear, which onnxruntime >= 1.20 "
                         "quantizes itself and older versions do not; re-export the artifact with this edgerobust")


def check_accumulators(graph: Graph, node, producers, table) -> None:
    """Σ|w_q|·max|q_x - z_x| + |b_q| < 2^31 for a Conv/Gemm/MatMul with quantized weights and a dequantized input."""
    from .rules.quantize import RANGES

    weights = graph.quantized.get(node.inputs[1]) if len(node.inputs) > 1 else None
    source = producers.get(node.inputs[0])
    if weights is None or source is None or source.op != "DequantizeLinear":
        return
    z = source.const(2)
    low, high = RANGES.get(torch.uint8 if z is None else z.dtype, (-math.inf, math.inf))
    zx = 0.0 if z is None else float(z.abs().max())
    widest = max(high + zx, zx - low)
    w = (weights[0].to(torch.float64) - weights[2].to(torch.float64)).abs()
    if node.op == "Conv" or (node.op == "Gemm" and node.attr("transB", 0)):
        per_output = w.reshape(w.shape[0], -1).sum(1)
    else:  # Gemm (K, N), MatMul (K, N)
        per_output = w.reshape(w.shape[0], -1).sum(0)
    bias = graph.quantized.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if bias is not None:  # fused kernels add the int32 bias at s_x·s_w: the graph's scale must be its float32 rounding
        if source.const(1).numel() != 1:
            raise BoundError(f"{node.label()}: per-channel input scales feeding a fused kernel have no int8 model")
        product = float(source.const(1).reshape(())) * weights[1].to(torch.float64).reshape(-1)
        stored = bias[1].to(torch.float64).reshape(-1)
        if not bool(((stored - product).abs() <= 2.0 ** -24 * product).all()):
            raise BoundError(f"{node.label()}: its bias scale is not float32(s_x·s_w), the scale onnxruntime's fused "
                             "kernels add the int32 bias at")
    biases = 0.0 if bias is None else float((bias[0].to(torch.float64) - bias[2].to(torch.float64)).abs().max())
    largest = float(per_output.max()) * widest + biases
    if not largest < ACCUMULATOR:
        raise BoundError(f"{node.label()}: its int32 accumulator may overflow (up to {largest:.3g}); the int8 kernel "
                         "model assumes exact accumulation")


def annotate(graph: Graph, shape: tuple[int, ...]) -> None:
    """Store every QuantizeLinear's window (and the input error it was built from) in its attributes, from interval
    bounds and float32 errors over the whole [0, 1] box of inputs of `shape` (without the batch axis). Where no
    window exists (an operator without a rule, a possible overflow) the attribute says why instead."""
    from .arithmetic import ARITHMETIC_MODELS, INT8_KERNEL_U
    from .rules import RULES, Unbounded
    from .rules.quantize import ON_GRID, WINDOW, WINDOW_ERROR, scale_zero

    quantizers = [n for n in graph.nodes if n.op == "QuantizeLinear"]
    ar = ARITHMETIC_MODELS.get("int8")
    producers = _producers(graph)
    box = torch.zeros((1, *shape), dtype=torch.float64)
    table = {graph.input: (box, box + 1)}
    errs = {graph.input: ar.input_roundoff * (box + 1)}
    try:
        for node in graph.nodes:
            if node.op not in RULES:
                raise BoundError(f"operator {node.op} has no rule")
            rule, ins = RULES.get(node.op), node.dynamic
            if node.op in ("Conv", "ConvTranspose", "Gemm"):
                check_float_weights(graph, node, producers)
            if node.op in ("Conv", "Gemm", "MatMul"):
                check_accumulators(graph, node, producers, table)
            if node.op == "QuantizeLinear":
                lo, hi = table[ins[0]]
                e = errs[ins[0]]
                a = torch.maximum(lo.abs(), hi.abs()) + e
                s = scale_zero(node, lo.dim(), lo.dtype)[0]
                w = (e + INT8_KERNEL_U * (a + _raw(producers.get(ins[0]), producers))) / s
                if not bool(torch.isfinite(w).all()):
                    raise Unbounded(f"{node.label()}: its input is not bounded over the box")
                node.attrs[WINDOW], node.attrs[WINDOW_ERROR] = w, e
                node.attrs[ON_GRID] = on_grid(node, producers) and bool((w < 0.25).all())
            out = node.outputs[0]
            table[out] = rule.interval(node, *[table[n] for n in ins])
            spans = [(table[n][0] - errs[n], table[n][1] + errs[n]) for n in ins]
            mags = [torch.maximum(table[n][0].abs(), table[n][1].abs()) + errs[n] for n in ins]
            errs[out] = rule.error_in(node, ar, spans, mags, [errs[n] for n in ins])
            if not bool(torch.isfinite(errs[out]).all()):
                raise Unbounded(f"{node.label()}: no finite float32 error bound over the box")
    except (BoundError, Unbounded, KeyError) as reason:
        why = str(reason).strip("'")
        for node in quantizers:
            if not torch.is_tensor(node.attrs.get(WINDOW)):
                node.attrs[WINDOW] = f"the static pass over the input box stopped: {why}"
