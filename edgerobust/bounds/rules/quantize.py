"""QuantizeLinear and DequantizeLinear of computed tensors: the int8 (QDQ) artifact's rounding and saturation.

Q(x) = saturate(round_half_even(x / s) + z) onto the integer range of z's type, DQ(q) = (q - z)·s, per tensor or
per channel (`axis`). Weight and bias DequantizeLinear nodes (constant inputs) never reach these rules: graph.py
folds them into exact float64 constants.

The artifact's kernels do not round the exact x / s: onnxruntime's fused integer kernels requantize through a
float32 multiplier (or a fixed-point one), and an unfused segment computes x in float32. Each QuantizeLinear node
therefore carries a *window* w (in steps of s, per element, from bounds/quantized.py): the value the kernel rounds
lies within w of the exact x / s whatever the input. Every bound here holds for every value in that window and for
either direction at a tie, so it covers the exact QDQ function and what the kernel computes at once:

* interval (IBP): the rounding is nondecreasing, so with t in [l/s - w, u/s + w], q lies in
  [clamp(ceil(t_lo - 1/2) + z), clamp(floor(t_hi + 1/2) + z)] (the smallest and largest value any round-to-nearest
  gives);
* CROWN: the saturated rounding is a staircase of unit steps. With k0 = q_lo, k1 = q_hi and m = k1 - k0 levels
  crossed, every line through the right end of the lowest step, (p_l, k0) with p_l = min(k0 - z + 1/2, t_hi), with
  slope a in [0, a_max] lies below it on [t_lo, t_hi] (a_max = m/(t_hi - p_l) for one step, min(1, that) for
  more: the unit steps in between ask a <= 1, the highest step at t_hi asks the rest); symmetrically every line
  through the left end of the highest step, (p_u, k1), p_u = max(k1 - z - 1/2, t_lo), with slope in [0, a_max']
  lies above it. The slope is a_max where more of the range lies past the pivot than before it, else 0 (CROWN's
  adaptive choice for a ReLU, Zhang et al. 2018); m = 0 gives the exact constant. In x: y >= k0 + a(x/s - w - p_l),
  y <= k1 + a'(x/s + w - p_u), since the rounded value t̂ lies in [x/s - w, x/s + w] (the band round(t) ∈
  [t - 1/2, t + 1/2] tightened per step and at the saturation). CROWN tightens only the inputs of elements at a
  saturation edge or spanning at most NEAR levels: elsewhere the lines are the band, whatever the bounds. A
  requantization of values already on the node's grid (quantized.py `on_grid`) is the identity x/s + z, linear.
  Robustness of a float network does not carry over to its quantized version (Henzinger, Lechner and Žikelić,
  AAAI 2021), hence rules for the artifact's own rounding rather than the float model's certificate.
* error: the window already holds every floating-point error before the rounding and the rounded value is an exact
  integer, so the error after a QuantizeLinear is 0; the rule checks that the error it is handed fits the window it
  was built with. DequantizeLinear computes (q - z)·s in float32: one rounding, e' = s·e + single·|y|.
"""
from __future__ import annotations

import math

import torch

from .base import Linear, Rule, Unbounded, register, relaxed_backward

WINDOW = "edgerobust.window"  # node attribute: the window in steps (bounds/quantized.py), or why there is none
WINDOW_ERROR = "edgerobust.window_error"  # node attribute: the input error bound the window was built from
F64_SLACK = 2.0 ** -44  # the engine's own float64 x / s and the window's arithmetic, relative (plus absolute)
ON_GRID = "edgerobust.on_grid"  # node attribute: requantizes values already on its grid (quantized.py `on_grid`)
CACHE = "edgerobust.quantizer"  # node attribute: the constants per (dims, dtype, device)
LARGE, TINY = 2.0 ** 900, 2.0 ** -900  # keeps the window finite; keeps m / 0 finite where the slope is unused
NEAR = 2  # CROWN tightens the inputs of elements spanning at most this many levels (and those at an edge)
RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.uint16: (0, 65535), torch.int16: (-32768, 32767)}


def axis_view(node, value: torch.Tensor, dims: int) -> torch.Tensor:
    """A per-tensor (scalar) or per-axis (1-D) scale or zero point shaped to broadcast against a dims-D tensor."""
    if value.dim() == 0 or value.numel() == 1:
        return value.reshape(())
    if node.attr("block_size", 0):
        raise node.refuse("blocked quantization (block_size) has no rule")
    axis = node.attr("axis", 1) % dims
    if axis == 0:
        raise node.refuse("a scale per batch element (axis 0)")
    shape = [1] * dims
    shape[axis] = value.numel()
    return value.reshape(shape)


def scale_zero(node, dims: int, dtype, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """(s, z, the quantized type) of a QuantizeLinear/DequantizeLinear node, s and z shaped for a dims-D tensor
    (on `device` where given)."""
    s, z = node.const(1), node.const(2)
    if s is None or (len(node.inputs) > 2 and node.inputs[2] and z is None):
        raise node.refuse("its scale or zero point is computed, not constant")
    if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise node.refuse("a scale that is not positive and finite")
    kind = torch.uint8 if z is None else z.dtype
    zero = torch.zeros((), dtype=dtype) if z is None else axis_view(node, z, dims).to(dtype)
    return axis_view(node, s, dims).to(dtype=dtype, device=device), zero.to(device=device), kind


def window(node, like: torch.Tensor) -> torch.Tensor:
    """The node's window in steps, shaped to broadcast against `like` [B or S, *shape]."""
    w = node.attrs.get(WINDOW)
    if not torch.is_tensor(w):
        raise node.refuse(f"no window for its rounding: {w or 'the graph was not read by from_onnx'}")
    return w.to(dtype=like.dtype, device=like.device)


@register("QuantizeLinear")
class QuantizeLinear(Rule):
    """saturate(round_half_even(x / s) + z), rounding a value within the node's window of x / s."""

    nonlinear = True

    def nonlinear_at(self, node):
        """A requantization of values already on the node's grid is the identity x/s + z (quantized.py `on_grid`)."""
        return not node.attrs.get(ON_GRID)

    def mixes(self, node):
        return False  # elementwise

    def limits(self, node, x):
        """(s, z, lowest, highest level, z - 1/2, z + 1/2) shaped for x, kept per node (read at every call)."""
        cache = node.attrs.setdefault(CACHE, {})
        key = (x.dim(), x.dtype, x.device)
        if key not in cache:
            s, z, kind = scale_zero(node, x.dim(), x.dtype, x.device)
            if kind not in RANGES:
                raise node.refuse(f"quantization to {kind} has no rule (uint8, int8, uint16, int16)")
            low, high = RANGES[kind]
            cache[key] = (s, z, float(low), float(high), z - 0.5, z + 0.5)
        return cache[key]

    def forward(self, node, x):
        s, z, low, high = self.limits(node, x)[:4]
        return (torch.round(x / s) + z).clamp(low, high)

    def _span(self, node, lo, hi):
        """t_lo, t_hi: where the value the kernel rounds lies (steps), the levels k0 and k1 any rounding to nearest
        of it gives at least and at most, and the window with the engine's float64 slack."""
        s, z, low, high, z_minus, z_plus = self.limits(node, lo)
        tl, th = lo / s, hi / s
        size = torch.maximum(tl.abs(), th.abs()).clamp_max(LARGE)  # finite: an infinite bound stays infinite below
        w = window(node, lo) + F64_SLACK * (size + 1)
        tl, th = tl - w, th + w
        return tl, th, torch.ceil(tl + z_minus).clamp_(low, high), torch.floor(th + z_plus).clamp_(low, high), w

    def interval(self, node, bounds):
        return self._span(node, *bounds)[2:4]

    def needs(self, node, lo, hi):
        """Elements whose window crosses a saturation edge or spans at most NEAR levels: elsewhere the relaxation
        is the bound-independent band x/s + z ± (1/2 + w) (slope 1 through every pivot), so tighter bounds would
        not change it (only tightness depends on this choice, never soundness)."""
        s, z, low, high = self.limits(node, lo)[:4]
        tl, th, k0, k1, _ = self._span(node, lo, hi)
        bottom, top = low - z + 0.5, high - z - 0.5  # right end of the lowest step, left end of the highest
        edge = ((tl < bottom) & (th > bottom)) | ((tl < top) & (th > top))
        return (k1 > k0) & (edge | (k1 - k0 <= NEAR))

    def relaxation(self, node, lo, hi):
        """(lower slope, lower intercept, upper slope, upper intercept) in x, sound on [lo, hi] (module docstring)."""
        s, z, _, _, z_minus, z_plus = self.limits(node, lo)
        if node.attrs.get(ON_GRID):  # x = (q - z)·s on the same grid, window < 1/2: y = q = x/s + z exactly
            return 1 / s, z, 1 / s, z
        tl, th, k0, k1, w = self._span(node, lo, hi)
        m = k1 - k0
        p_l = torch.minimum(k0 - z_minus, th)  # right end of the lowest step: k0 - z + 1/2
        p_u = torch.maximum(k1 - z_plus, tl)  # left end of the highest step: k1 - z - 1/2
        right, left = th - p_l, p_u - tl  # range past the lower pivot, before the upper one
        cap = torch.where(m > 1, 1.0, math.inf)  # unit steps in between ask a <= 1
        zero = torch.zeros((), dtype=lo.dtype, device=lo.device)
        a_l = torch.where(right > p_l - tl, torch.minimum(m / right.clamp_min(TINY), cap), zero)
        a_u = torch.where(left > th - p_u, torch.minimum(m / left.clamp_min(TINY), cap), zero)
        return a_l / s, k0 - a_l * (w + p_l), a_u / s, k1 + a_u * (w - p_u)

    def backward(self, node, A, bounds, alpha=None):
        ls, lb, us, ub = self.relaxation(node, *bounds)
        return relaxed_backward(A, ls, lb, us, ub)

    def error(self, node, ar, mags, errs):
        built = node.attrs.get(WINDOW_ERROR)
        if not torch.is_tensor(built):
            raise node.refuse(f"no window for its rounding: {node.attrs.get(WINDOW)}")
        # over a ball inside the box the error is at most the box's, up to the last bits of the engine's float64
        # (absorbed by the window's ρ·|x| term)
        if bool((errs[0] > built.to(dtype=errs[0].dtype, device=errs[0].device) * (1 + 2.0 ** -30) + 2.0 ** -60).any()):
            raise Unbounded(f"{node.label()}: its input's error exceeds the window its rounding was bounded with")
        return torch.zeros_like(mags[0])


@register("DequantizeLinear")
class DequantizeLinear(Linear):
    """(q - z)·s of a computed integer tensor (constant ones are folded into float64 weights by graph.py)."""

    def mixes(self, node):
        return False  # elementwise

    def forward(self, node, q):
        s, z, _ = scale_zero(node, q.dim(), q.dtype, q.device)
        return (q - z) * s

    def abs_linear(self, node, t):
        return t * scale_zero(node, t.dim(), t.dtype, t.device)[0]

    def adjoint(self, node, flat, shapes):
        return [flat * scale_zero(node, flat.dim(), flat.dtype, flat.device)[0]]

    def error(self, node, ar, mags, errs):
        s, z, _ = scale_zero(node, mags[0].dim(), mags[0].dtype, mags[0].device)
        return s * errs[0] + ar.single * (mags[0] + z.abs()) * s + ar.underflow
