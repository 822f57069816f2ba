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
error bounds through an ONNX graph. The walk and the per-operator rules are the bound engine's (edgerobust/bounds/):
this tolerance is its ε = 0 case, the certificates of `edgerobust certify` its ε > 0 case.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch

from ..bounds import BoundError, Engine, Unbounded, from_onnx

# The check of outputs against the bound is the runner's pure-numpy one, so host and device `verify` decide alike.
from ..runner.tolerance import compare_with_tolerance, decision_may_differ  # noqa: F401  (re-exported)
from .arithmetic import Arithmetic
from .precisions import arithmetic_of, require_arithmetic  # each precision's arithmetic model is in its record

# The float64 evaluation of the bounds is itself rounded (relative ~n·2^-53 per layer): round the result up by this.
SAFETY = 1.0 + 2.0 ** -30
REFERENCE = "Higham, Accuracy and Stability of Numerical Algorithms (2002), ch. 3: |fl(w'x) - w'x| <= γ_n |w|'|x|"
DECISION_RULE = "argmax may differ only where the golden top-2 margin < 2 * max bound of that input"


def _analyse(proto: onnx.ModelProto, inputs: np.ndarray, arithmetic: Arithmetic) -> tuple[np.ndarray, np.ndarray]:
    """The bound engine at ε = 0: exact outputs in float64 and their forward error bound (raises Unbounded)."""
    try:
        engine = Engine(from_onnx(proto), what="error")
        with torch.no_grad():
            values = engine.forward(torch.from_numpy(np.asarray(inputs, dtype=np.float64)))
            errors = engine.errors({name: v.abs() for name, v in values.items()}, arithmetic,
                                   {name: (v, v) for name, v in values.items()})
    except BoundError as error:
        raise BoundError(f"the golden tolerance cannot be derived: {error}") from None
    out = engine.graph.output
    return values[out].numpy(), (errors[out] * SAFETY).numpy()


def forward_error_bound(proto: onnx.ModelProto, inputs: np.ndarray, precision: str) -> np.ndarray | None:
    """Elementwise bound on |computed output - exact output| of the fp32 graph `proto` run in `precision`.

    Returns an (N, K) float64 array, or None where no finite bound exists (see the module docstring).
    """
    arithmetic = arithmetic_of(precision)
    if arithmetic is None:  # a precision without an arithmetic model has no derived bound
        return None
    try:
        with torch.no_grad():
            return _analyse(proto, inputs, arithmetic)[1]
    except Unbounded:
        return None


def exact_outputs(proto: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    """The graph's outputs in float64 (the reference the bounds are about)."""
    with torch.no_grad():
        return _analyse(proto, inputs, require_arithmetic("fp32"))[0]


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
                        device_counts: list[int] | np.ndarray, precision: str = "fp32",
                        phase: str = "estimate", thresholds: np.ndarray | None = None) -> dict[str, Any]:
    """Check a device's smoothing votes for one point against the host, sample by sample where it matters.

    The host regenerates the runner's noise samples (the runner's own `noise_batches`, docs/runner-protocol.md) and
    walks the graph exactly with its forward error bound for `precision`. A sample whose exact top-2 margin is at
    least twice its largest bound votes for the exact argmax on any conforming device; only the others ("near the
    boundary") may vote differently, so the host recounts those and the device's counts must lie between the certain
    votes and the certain votes plus the uncertain samples. `disagreeing` is the least number of samples whose vote
    differs from the exact one (half the L1 distance of the count vectors). `thresholds`: the sound noise's
    (smoothing/sound.py), whose samples float32(round(255x) + J)/255 the runner's `sound_batches` draws instead.
    """
    from ..runner.noise import PHASES, noise_batches, sound_batches

    x = np.asarray(x, np.float32)
    batches = noise_batches(x, sigma, n, n, seed, row, PHASES[phase]) if thresholds is None \
        else sound_batches(x, thresholds, n, n, seed, row, PHASES[phase])
    samples = np.concatenate(list(batches))
    with torch.no_grad():
        arithmetic = arithmetic_of(precision)
        try:
            if arithmetic is None:
                raise Unbounded
            exact, bound = _analyse(proto, samples, arithmetic)
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
