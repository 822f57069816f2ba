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
* α-CROWN (Xu et al. 2021): the slopes are free. Per element two variables α_l, α_u in [0, 1] pick the slopes
  a = α_l·a_max, a' = α_u·a_max' of the two pivot families above (a_max, a_max' as there, with the least level at
  t_hi and the most at t_lo, so that ties at an end count either way; at most SLOPE_LIMIT), starting from CROWN's
  choice (α = 1 where CROWN takes a_max, else 0); the engine's `_alpha` moves them by projected gradient steps.
  The intercepts do not rely on the pivot: `staircase_lines` takes for *any* slope a >= 0 the exact infimum of
  q - a·t̂ over the range. Soundness: every rounding to nearest of t̂ (either way at a tie), saturated, lies in
  [F(t̂), G(t̂)], F(t̂) = clamp(ceil(t̂ + z - 1/2)) and G(t̂) = clamp(floor(t̂ + z + 1/2)), both nondecreasing
  staircases: F = k on (r_{k-1}, r_k], r_k = k - z + 1/2, and G = k on [L_k, L_{k+1}), L_k = k - z - 1/2 (the
  saturated levels' steps reaching to ±inf). On one step F - a·t̂ decreases (a >= 0), so its infimum over [t_lo, t_hi]
  is min over the levels k = F(t_lo) .. F(t_hi) of k - a·min(r_k, t_hi), attained; below the top level r_k = k - z +
  1/2 and the term is linear in k, so the two ends of that run and the top level give the minimum: three terms. So
  F(t̂) >= a·t̂ + b on the range, and with |t̂ - x/s| <= w, q >= a·t̂ + b >= a·(x/s) + b - a·w since a >= 0 (the
  upper line symmetrically: sup over k = G(t_lo) .. G(t_hi) of k - a'·max(L_k, t_lo), q <= a'·(x/s) + c + a'·w).
  Nothing here depends on how a was chosen, only on a >= 0 (the rule clamps α to [0, 1] and reads nan as 0; a
  slope is 0 where the range is infinite, m/inf, so no 0·inf arises). Floating point: t_lo, t_hi carry the engine's
  float64 slack, which absorbs the rounding of x / s and of a / s as for CROWN; each intercept term k - a·(r ± w) is
  moved outwards by 2^-50 of |k| + |a·(r ± w)|, more than its three float64 roundings (< 2^-51 of that), and the
  engine's SLACK covers the backward pass's own sums as for every rule.
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
SLOPE_LIMIT = 2.0 ** 20  # the largest slope (steps per step) α-CROWN may take: steeper lines are sound but useless
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


def levels(tl, th, z, low, high):
    """(k0, f_top, g_bottom, k1): the least level any saturated rounding to nearest of t̂ + z gives at t̂ = tl and at
    t̂ = th (ties rounded down: F(t̂) = clamp(ceil(t̂ + z - 1/2))), and the most at tl and at th (ties rounded up:
    G(t̂) = clamp(floor(t̂ + z + 1/2))); every rounding of t̂ lies in [F(t̂), G(t̂)], F and G nondecreasing."""
    z_minus, z_plus = z - 0.5, z + 0.5  # exact: z is an integer
    return (torch.ceil(tl + z_minus).clamp(low, high), torch.ceil(th + z_minus).clamp(low, high),
            torch.floor(tl + z_plus).clamp(low, high), torch.floor(th + z_plus).clamp(low, high))


def staircase_lines(tl, th, w, z, low, high, a_l, a_u):
    """Intercepts (lb, ub) such that a_l·x/s + lb <= q <= a_u·x/s + ub for any slopes a_l, a_u >= 0 (steps per
    step, finite; a slope must be 0 where the end of the range it would meet is infinite): q any saturated rounding
    to nearest of any t̂ in [tl, th] with |t̂ - x/s| <= w. Each is the exact infimum (supremum) over the levels,
    moved outwards past its own float64 rounding; the module docstring ("α-CROWN") has the argument."""
    k0, f_top, g_bottom, k1 = levels(tl, th, z, low, high)

    def times(a, r):  # a·r, where r is infinite only where a = 0 (no 0·inf = nan; the gradient stays finite)
        return a * torch.where(torch.isfinite(r), r, 0.0)

    def moved(k, prod, sign):  # k - prod, moved by 2^-50 of its terms' size: past its float64 rounding (< 2^-51)
        return k - prod + sign * 2.0 ** -50 * (k.abs() + prod.abs())

    # lower: F = k on (r_{k-1}, r_k], r_k = k - z + 1/2 (the top level's step reaching past th, the saturated
    # ones to ±inf), so inf over [tl, th] of F(t̂) - a·t̂ = min over k = k0 .. f_top of k - a·min(r_k, th); k - a·r_k
    # is linear in k below f_top, so the ends k0 and f_top - 1 and the top f_top suffice
    mid = torch.maximum(f_top - 1, k0)
    lows = [moved(k, times(a_l, r + w), -1.0) for k, r in ((k0, torch.minimum(k0 - (z - 0.5), th)),
                                                           (mid, torch.minimum(mid - (z - 0.5), th)), (f_top, th))]
    # upper: G = k on [L_k, L_{k+1}), L_k = k - z - 1/2: sup of G(t̂) - a·t̂ = max over k = g_bottom .. k1 of
    # k - a·max(L_k, tl): g_bottom at tl, and the ends g_bottom + 1 and k1 of the linear part
    nxt = torch.minimum(g_bottom + 1, k1)
    highs = [moved(k, times(a_u, r - w), 1.0) for k, r in ((k1, torch.maximum(k1 - (z + 0.5), tl)),
                                                           (nxt, torch.maximum(nxt - (z + 0.5), tl)), (g_bottom, tl))]
    return (torch.minimum(torch.minimum(lows[0], lows[1]), lows[2]),
            torch.maximum(torch.maximum(highs[0], highs[1]), highs[2]))


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

    def relaxation(self, node, lo, hi, alpha=None):
        """(lower slope, lower intercept, upper slope, upper intercept) in x, sound on [lo, hi] (module docstring);
        with `alpha` ([S, 2, B, *shape]) the optimisable lines of `_optimised` instead of CROWN's choice."""
        s, z, _, _, z_minus, z_plus = self.limits(node, lo)
        if node.attrs.get(ON_GRID):  # x = (q - z)·s on the same grid, window < 1/2: y = q = x/s + z exactly
            return 1 / s, z, 1 / s, z
        if alpha is not None:
            return self._optimised(node, lo, hi, alpha)
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
        ls, lb, us, ub = self.relaxation(node, *bounds, alpha=alpha)
        return relaxed_backward(A, ls, lb, us, ub)

    # --- α-CROWN (Xu et al. 2021): optimisable slopes ---------------------------------------------------------------
    def _ranges(self, node, lo, hi):
        """(tl, th, w) of `_span`, the levels of `levels`, and the largest lower and upper slopes (steps per step)
        of the pivot families (module docstring, "α-CROWN"), each at most SLOPE_LIMIT; m / inf = 0 where a bound
        is infinite (a line with a positive slope would reach -inf or +inf there)."""
        s, z, low, high, z_minus, z_plus = self.limits(node, lo)
        tl, th, _, _, w = self._span(node, lo, hi)
        k0, f_top, g_bottom, k1 = levels(tl, th, z, low, high)
        m_l, m_u = f_top - k0, k1 - g_bottom
        right = (th - torch.minimum(k0 - z_minus, th)).clamp_min(TINY)  # past the lower pivot (k0's right end)
        left = (torch.maximum(k1 - z_plus, tl) - tl).clamp_min(TINY)  # before the upper pivot (k1's left end)
        top_l = torch.where(m_l > 1, torch.clamp(m_l / right, max=1.0), m_l / right)
        top_u = torch.where(m_u > 1, torch.clamp(m_u / left, max=1.0), m_u / left)
        return tl, th, w, (k0, f_top, g_bottom, k1), top_l.clamp_max(SLOPE_LIMIT), top_u.clamp_max(SLOPE_LIMIT)

    def alpha_start(self, node, lo, hi):
        """α-CROWN's variables [2, B, *shape] (lower, upper), each in [0, 1], the fraction of the largest slope of
        its pivot family: 1 where CROWN takes the largest slope (more of the range past the pivot), else 0. None
        for a requantization on the grid (linear)."""
        if node.attrs.get(ON_GRID):
            return None
        z_minus, z_plus = self.limits(node, lo)[4:]
        tl, th, _, (k0, _, _, k1), top_l, top_u = self._ranges(node, lo, hi)
        p_l, p_u = torch.minimum(k0 - z_minus, th), torch.maximum(k1 - z_plus, tl)
        lower = ((th - p_l > p_l - tl) & (top_l > 0)).to(lo.dtype)
        upper = ((p_u - tl > th - p_u) & (top_u > 0)).to(lo.dtype)
        return torch.stack([lower, upper])

    def alpha_project(self, node, alpha):
        alpha.clamp_(0, 1)

    def _optimised(self, node, lo, hi, alpha):
        """Slopes alpha·(largest slope of the pivot family), alpha clamped to [0, 1] (nan read as 0), intercepts
        by `staircase_lines`: sound for any slope >= 0, so for any alpha."""
        s, z, low, high = self.limits(node, lo)[:4]
        tl, th, w, _, top_l, top_u = self._ranges(node, lo, hi)
        frac = alpha.nan_to_num(0.0).clamp(0, 1)
        a_l, a_u = frac[:, 0] * top_l, frac[:, 1] * top_u  # [S, B, *shape], >= 0
        lb, ub = staircase_lines(tl, th, w, z, low, high, a_l, a_u)
        return a_l / s, lb, a_u / s, ub

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
