"""Derived golden-output tolerances: a floating-point forward error analysis of the exported ONNX graph.

A bundle's golden outputs come from PyTorch fp32 on the host; the device recomputes them with another library, on
another architecture, maybe in fp16. Bit equality is not to be had (onnxruntime on aarch64 differs from x86 by ~1e-8
in fp32 and runs native fp16 kernels where x86 converts to fp32), and a tuned tolerance proves nothing. Instead each
golden input gets an elementwise bound on |computed logit - exact logit| for every precision, from the standard model
of floating-point arithmetic (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, ch. 2-3):

* fl(x op y) = (x op y)(1 + δ) + η with |δ| <= u and |η| <= η_min (gradual underflow; η only for products);
* a dot product of length n in precision u has |fl(wᵀx) - wᵀx| <= γ_n |w|ᵀ|x|, γ_n = n·u / (1 - n·u) (Higham §3.1,
  eq. (3.5)), whatever the summation order, blocking or FMA use of the kernel.

Absolute bounds `e` (with |x̂ - x| <= e elementwise) are propagated through the graph, next to the exact values x
(computed in float64 from the artifact's fp32 weights), with a = |x| + e bounding the computed |x̂|:

* Conv / Gemm / MatMul, y = Wx + b of fan-in n:  e' = |W|e + (u_w + γ_{n+1}(1 + u_w))(|W|a + |b|) + n·η_min,
  where u_w is the rounding of the stored weights (0 for fp32, u16 = 2^-11 for fp16: "fp16 weight rounding adds
  u16·|W||x|"); batch norm arrives folded into the convolution by the exporter (else it is an affine map of its own);
* ReLU, Clip, MaxPool: 1-Lipschitz and exact, e' = e (the window's largest e for pooling);
* AveragePool / GlobalAveragePool over k values: e' = mean(e) + γ_{k+1}·mean(a);
* Add of two tensors: e' = e1 + e2 + u(a1 + a2); Mul/Div/Add/Sub by a constant likewise with its rounding.

The device's output differs from the golden output by at most bound(device precision) + bound(fp32) (the golden
outputs carry their own fp32 error), elementwise: that is the recorded tolerance. A decision (argmax) may differ only
where the golden top-2 margin is below twice the largest bound of that input (`decision_may_differ`).

The bound is a worst case: for fp16 it is loose (γ_576 ≈ 0.39 for a 64·3·3 convolution) and where n·u >= 1 or a
value could overflow, no finite bound exists; the precision is then recorded as unbounded and its golden outputs are
checked only for finiteness and the sha256 of the artifact. Hand-written: no maintained library propagates rounding
error bounds through an ONNX graph.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from ..errors import EdgeRobustError

# The check of outputs against the bound is the runner's pure-numpy one, so host and device `verify` decide alike.
from ..runner.tolerance import compare_with_tolerance, decision_may_differ  # noqa: F401  (re-exported)
from .arithmetic import Arithmetic
from .precisions import arithmetic_of, require_arithmetic  # each precision's arithmetic model is in its record

# The float64 evaluation of the bounds is itself rounded (relative ~n·2^-53 per layer): round the result up by this.
SAFETY = 1.0 + 2.0 ** -30
REFERENCE = "Higham, Accuracy and Stability of Numerical Algorithms (2002), ch. 3: |fl(w'x) - w'x| <= γ_n |w|'|x|"
DECISION_RULE = "argmax may differ only where the golden top-2 margin < 2 * max bound of that input"


class Unbounded(Exception):
    """No finite bound: n·u >= 1 at some layer or a value may overflow the precision."""


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


class _Analysis:
    """Walks the graph once for one batch: `values` maps a tensor name to (x, e) or to a constant array."""

    def __init__(self, proto: onnx.ModelProto, arithmetic: Arithmetic):
        self.proto, self.ar = proto, arithmetic
        self.consts: dict[str, torch.Tensor] = {
            init.name: torch.from_numpy(numpy_helper.to_array(init).astype(np.float64)
                                        if numpy_helper.to_array(init).dtype.kind == "f"
                                        else numpy_helper.to_array(init).copy())
            for init in proto.graph.initializer}
        self.values: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.asarray(inputs, dtype=np.float64))
        # The float32 input itself is exact; a graph that casts it to fp16 rounds it once.
        self.values[self.proto.graph.input[0].name] = (x, self.ar.input_roundoff * x.abs())
        for node in self.proto.graph.node:
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise EdgeRobustError(f"the golden tolerance cannot be derived: operator {node.op_type} has no error "
                                      "rule in export/tolerance.py; add one or export without it")
            out = handler(node)
            if out is not None:
                self.values[node.output[0]] = out
                x_out, e_out = out
                if bool(((x_out.abs() + e_out) > self.ar.largest).any()) or not bool(torch.isfinite(e_out).all()):
                    raise Unbounded(f"{node.op_type} {node.name or node.output[0]}")
        x, e = self.values[self.proto.graph.output[0].name]
        return x.numpy(), (e * SAFETY).numpy()

    # --- helpers --------------------------------------------------------------------------------------------------
    def dyn(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in self.values:
            raise EdgeRobustError(f"the golden tolerance cannot be derived: {name} is neither an input nor computed")
        return self.values[name]

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def affine(self, x, e, apply, apply_abs, bias, n):
        """y = W x + b via `apply` (W·) and `apply_abs` (|W|·): the dot-product rule."""
        ar = self.ar
        factor = ar.weight_roundoff + ar.gamma(n) * (1.0 + ar.weight_roundoff)
        if math.isinf(factor):
            raise Unbounded(f"fan-in {n}: n·u >= 1")
        wa, we = apply_abs(torch.cat([x.abs() + e, e])).chunk(2)  # one pass of |W| over a and e
        s = wa + (bias.abs() if bias is not None else 0.0)
        y = apply(x) + (bias if bias is not None else 0.0)
        return y, we + factor * s + n * ar.underflow

    def elementwise_const(self, x, e, c, op):
        """x op c for a constant c (stored rounded by u_w), one rounding of the result."""
        ar, cabs = self.ar, c.abs()
        a = x.abs() + e
        if op in ("Add", "Sub"):
            y = x + c if op == "Add" else x - c
            err = e + ar.weight_roundoff * cabs
            return y, err + ar.unit_roundoff * (a + cabs * (1 + ar.weight_roundoff))
        if op == "Mul":
            y = x * c
            err = cabs * e + ar.weight_roundoff * cabs * a
            return y, err + ar.unit_roundoff * cabs * (1 + ar.weight_roundoff) * a + ar.underflow
        # Div: |x̂/ĉ - x/c| <= e/|ĉ| + |x| |1/ĉ - 1/c|, with |ĉ| >= |c|(1 - u_w)
        low = cabs * (1 - ar.weight_roundoff)
        y = x / c
        err = e / low + x.abs() * ar.weight_roundoff / low
        return y, err + ar.unit_roundoff * a / low + ar.underflow

    # --- operators ------------------------------------------------------------------------------------------------
    def op_Conv(self, node):
        x, e = self.dyn(node.input[0])
        w = self.consts[node.input[1]]
        b = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise EdgeRobustError("the golden tolerance cannot be derived: Conv with auto_pad; export with pads")
        dims = w.dim() - 2
        strides = _attr(node, "strides", [1] * dims)
        dilations = _attr(node, "dilations", [1] * dims)
        pads = _attr(node, "pads", [0] * (2 * dims))
        group = _attr(node, "group", 1)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
        pad = [p for i in reversed(range(dims)) for p in (pads[i], pads[i + dims])]  # F.pad: last axis first

        def apply(t, weight=w):
            return conv(F.pad(t, pad), weight, None, strides, 0, dilations, group)

        n = int(np.prod(w.shape[1:])) + (1 if b is not None else 0)
        bias = b.reshape(1, -1, *([1] * dims)) if b is not None else None
        return self.affine(x, e, apply, lambda t: apply(t, w.abs()), bias, n)

    def op_Gemm(self, node):
        x, e = self.dyn(node.input[0])
        w = self.consts.get(node.input[1])
        if w is None or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0 or _attr(node, "transA", 0):
            raise EdgeRobustError("the golden tolerance cannot be derived: Gemm other than x·W (+ b) with constant W")
        w = w.T if _attr(node, "transB", 0) else w
        b = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        return self.affine(x, e, lambda t: t @ w, lambda t: t @ w.abs(), b, w.shape[0] + (1 if b is not None else 0))

    def op_MatMul(self, node):
        x, e = self.dyn(node.input[0])
        w = self.consts.get(node.input[1])
        if w is None:
            raise EdgeRobustError("the golden tolerance cannot be derived: MatMul of two computed tensors")
        return self.affine(x, e, lambda t: t @ w, lambda t: t @ w.abs(), None, w.shape[-2])

    def op_BatchNormalization(self, node):
        x, e = self.dyn(node.input[0])
        gamma, beta, mean, var = (self.consts[n] for n in node.input[1:5])
        scale = gamma / torch.sqrt(var + _attr(node, "epsilon", 1e-5))
        shift = beta - mean * scale
        shape = (1, -1, *([1] * (x.dim() - 2)))
        scale, shift = scale.reshape(shape), shift.reshape(shape)
        ar = self.ar
        coeff = ar.weight_roundoff + ar.gamma(5)  # scale and shift each come from <= 5 rounded operations
        a = x.abs() + e
        s = scale.abs() * a + shift.abs()
        return x * scale + shift, scale.abs() * e + (coeff + ar.gamma(2) * (1 + coeff)) * s + ar.underflow

    def op_Relu(self, node):
        x, e = self.dyn(node.input[0])
        return x.clamp_min(0), e

    def op_Clip(self, node):
        x, e = self.dyn(node.input[0])
        low = self.consts[node.input[1]] if len(node.input) > 1 and node.input[1] else _attr(node, "min")
        high = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else _attr(node, "max")
        low = None if low is None else float(low)
        high = None if high is None else float(high)
        return x.clamp(low, high), e

    def _pool_args(self, node, dims):
        return (_attr(node, "kernel_shape"), _attr(node, "strides", [1] * dims), _attr(node, "pads", [0] * 2 * dims),
                _attr(node, "ceil_mode", 0))

    def op_MaxPool(self, node):
        x, e = self.dyn(node.input[0])
        dims = x.dim() - 2
        kernel, strides, pads, ceil = self._pool_args(node, dims)
        if pads[:dims] != pads[dims:] or _attr(node, "dilations", [1] * dims) != [1] * dims:
            raise EdgeRobustError("the golden tolerance cannot be derived: MaxPool with asymmetric pads or dilation")
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
        return (pool(x, kernel, strides, pads[:dims], ceil_mode=bool(ceil)),
                pool(e, kernel, strides, pads[:dims], ceil_mode=bool(ceil)))

    def _average(self, x, e, mean, k):
        a = x.abs() + e
        return mean(x), mean(e) + self.ar.gamma(k + 1) * mean(a) + self.ar.underflow

    def op_AveragePool(self, node):
        x, e = self.dyn(node.input[0])
        dims = x.dim() - 2
        kernel, strides, pads, ceil = self._pool_args(node, dims)
        if pads[:dims] != pads[dims:]:
            raise EdgeRobustError("the golden tolerance cannot be derived: AveragePool with asymmetric pads")
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
        include = bool(_attr(node, "count_include_pad", 0))

        def mean(t):
            return pool(t, kernel, strides, pads[:dims], ceil_mode=bool(ceil), count_include_pad=include)

        return self._average(x, e, mean, int(np.prod(kernel)))

    def op_GlobalAveragePool(self, node):
        x, e = self.dyn(node.input[0])
        axes = tuple(range(2, x.dim()))
        return self._average(x, e, lambda t: t.mean(dim=axes, keepdim=True), int(np.prod(x.shape[2:])))

    def _binary(self, node):
        first, second = node.input[0], node.input[1]
        if self.is_const(first) and self.is_const(second):
            raise EdgeRobustError(f"the golden tolerance cannot be derived: {node.op_type} of two constants "
                                  "(the graph should be constant-folded)")
        if self.is_const(second) or self.is_const(first):
            dyn_name, const_name = (first, second) if self.is_const(second) else (second, first)
            x, e = self.dyn(dyn_name)
            c = self.consts[const_name]
            if node.op_type in ("Sub", "Div") and self.is_const(first):
                raise EdgeRobustError(f"the golden tolerance cannot be derived: constant {node.op_type} tensor")
            return self.elementwise_const(x, e, c, node.op_type)
        (x1, e1), (x2, e2) = self.dyn(first), self.dyn(second)
        if node.op_type not in ("Add", "Sub"):
            raise EdgeRobustError(f"the golden tolerance cannot be derived: {node.op_type} of two computed tensors")
        y = x1 + x2 if node.op_type == "Add" else x1 - x2
        return y, e1 + e2 + self.ar.unit_roundoff * (x1.abs() + e1 + x2.abs() + e2)

    op_Add = op_Sub = op_Mul = op_Div = _binary

    def _structural(self, node, fn):
        x, e = self.dyn(node.input[0])
        return fn(x), fn(e)

    def op_Flatten(self, node):
        axis = _attr(node, "axis", 1)
        return self._structural(node, lambda t: t.reshape(int(np.prod(t.shape[:axis])), -1))

    def op_Reshape(self, node):
        shape = [int(s) for s in self.consts[node.input[1]].tolist()]
        return self._structural(node, lambda t: t.reshape([t.shape[i] if s == 0 else s for i, s in enumerate(shape)]))

    def op_Identity(self, node):
        return self._structural(node, lambda t: t)

    op_Dropout = op_Identity

    def op_Transpose(self, node):
        perm = _attr(node, "perm")
        return self._structural(node, lambda t: t.permute(*perm))

    def op_Cast(self, node):
        x, e = self.dyn(node.input[0])
        if _attr(node, "to") == onnx.TensorProto.FLOAT16:
            return x, e + 2.0 ** -11 * (x.abs() + e)
        return x, e

    def op_Concat(self, node):
        pairs = [self.dyn(n) for n in node.input]
        axis = _attr(node, "axis")
        return torch.cat([p[0] for p in pairs], axis), torch.cat([p[1] for p in pairs], axis)


def forward_error_bound(proto: onnx.ModelProto, inputs: np.ndarray, precision: str) -> np.ndarray | None:
    """Elementwise bound on |computed output - exact output| of the fp32 graph `proto` run in `precision`.

    Returns an (N, K) float64 array, or None where no finite bound exists (see the module docstring).
    """
    arithmetic = arithmetic_of(precision)
    if arithmetic is None:  # a precision without an arithmetic model has no derived bound
        return None
    try:
        with torch.no_grad():
            return _Analysis(proto, arithmetic).run(inputs)[1]
    except Unbounded:
        return None


def exact_outputs(proto: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    """The graph's outputs in float64 (the reference the bounds are about)."""
    with torch.no_grad():
        return _Analysis(proto, require_arithmetic("fp32")).run(inputs)[0]


def float64_outputs(model: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    """The PyTorch model's outputs in float64 (a copy: the model itself is left in its dtype)."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(model).double().eval()(torch.from_numpy(np.asarray(inputs, np.float64))).numpy()


def golden_tolerances(proto: onnx.ModelProto, inputs: np.ndarray, precisions: list[str],
                      reference: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
    """Bound on |device output in each precision - golden output (fp32)|: the two forward error bounds added.

    `reference` is the golden model's own exact (float64) output where it is another graph than `proto` (PyTorch
    before the exporter's constant folding, which rounds folded constants to fp32): the float64 difference of the two
    exact functions on these inputs is added, so the tolerance covers the export itself.
    """
    golden = forward_error_bound(proto, inputs, "fp32")
    drift = 0.0 if reference is None else np.abs(exact_outputs(proto, inputs) - np.asarray(reference, np.float64))
    result = {}
    for precision in precisions:
        device = golden if precision == "fp32" else forward_error_bound(proto, inputs, precision)
        result[precision] = None if device is None or golden is None else (device + golden + drift) * SAFETY
    return result


def golden_tolerance(proto: onnx.ModelProto, inputs: np.ndarray, precision: str) -> np.ndarray | None:
    return golden_tolerances(proto, inputs, [precision])[precision]


def smoothing_agreement(proto: onnx.ModelProto, x: np.ndarray, row: int, sigma: float, n: int, seed: int,
                        device_counts: list[int] | np.ndarray, precision: str = "fp32") -> dict[str, Any]:
    """Check a device's smoothing votes for one point against the host, sample by sample where it matters.

    The host regenerates the runner's noise samples (the runner's own `noise_batches`, docs/runner-protocol.md) and
    walks the graph exactly with its forward error bound for `precision`. A sample whose exact top-2 margin is at
    least twice its largest bound votes for the exact argmax on any conforming device; only the others ("near the
    boundary") may vote differently, so the host recounts those and the device's counts must lie between the certain
    votes and the certain votes plus the uncertain samples. `disagreeing` is the least number of samples whose vote
    differs from the exact one (half the L1 distance of the count vectors).
    """
    from ..runner.commands import noise_batches

    samples = np.concatenate(list(noise_batches(np.asarray(x, np.float32), sigma, n, n, seed, row)))
    with torch.no_grad():
        arithmetic = arithmetic_of(precision)
        try:
            if arithmetic is None:
                raise Unbounded
            exact, bound = _Analysis(proto, arithmetic).run(samples)
        except Unbounded:
            exact, bound = exact_outputs(proto, samples), None
    votes = exact.argmax(1)
    uncertain = np.ones(n, bool) if bound is None else decision_may_differ(exact, bound)
    device = np.asarray(device_counts, dtype=np.int64)
    classes = max(len(device), exact.shape[1])
    host = np.bincount(votes, minlength=classes)
    certain = np.bincount(votes[~uncertain], minlength=classes)
    device = np.pad(device, (0, classes - len(device)))
    passed = bool(device.sum() == n and np.all(device >= certain) and np.all(device <= certain + uncertain.sum()))
    return {"row": row, "n": n, "precision": precision, "host_counts": host.tolist(),
            "device_counts": device.tolist(), "near_boundary": int(uncertain.sum()),
            "disagreeing": int(np.abs(device - host).sum() // 2), "passed": passed}
