"""Lipschitz-margin certificates and Peck's sound lower bounds, on the artifact's own graph (the bound engine's).

Every tensor t of the graph gets L(t), an upper bound of its L2 Lipschitz constant in the input: L(input) = 1, an
operator multiplies it by a sound bound of its own operator norm, x1 ± x2 adds (L1 + L2), Concat takes √ΣL².
Operator norms (the same tools as models/lipschitz.py, on the operators themselves, never a reshaped kernel):
Gemm/MatMul the exact largest singular value, a 2-D Conv the largest singular value of its kernel's DFT over a grid
that holds the padded input (`conv_upper_bound`), any other affine operator √(‖A‖₁‖A‖∞) read off |A| by one forward
and one transposed pass (exact for BatchNormalization, the normalisation and moves), Relu/Clip/Tanh/Softplus 1,
Sigmoid 1/4, MaxPool
√(Π⌈k/s⌉) (each input lies in that many windows), LpPool that times K^(1/p - 1/2) for p < 2 (‖v‖_p <= that
·‖v‖_2 on a window of K; the reverse triangle inequality gives 1 per window), LRN its Jacobian's row and column
sum bound (rules/normalization.py). Each is widened by the engine's own float64 slack.

Two certificates over the L2 ball of radius ε₂ (an L∞ ball of radius ε lies in the L2 ball of radius ε√d):
* `lipschitz` (Peconi; issue 22): y_label - y_j >= m_j(x) - √2·L(logits)·ε₂;
* `peck` (Peck, sound mode): the last linear layer exactly (Lemma 3.5), Lipschitz below it, i.e. κ_in = κ_out / Lip
  per layer, as the reference digest proves sound: y_label - y_j >= m_j(x) - ‖w_label - w_j‖₂·L(h)·ε₂ with h the
  last layer's input. Never looser than `lipschitz` (‖w_label - w_j‖₂ <= √2·‖W‖₂).
Peck's thesis-mode layer rules (‖W‖_F for a convolution, max over batch-norm channels, Thm 4.2 on ReLU networks)
are not valid lower bounds: peck.py computes them as published, labelled as no certificate, and
tests/test_peck.py pins the counterexamples; they never enter a certificate.
m_j(x) is the engine's bound at ε = 0 (its float64 slack included); the error terms of an arithmetic model are the
caller's (certify/core.py), with magnitudes from IBP over the ball.
"""
from __future__ import annotations

import math
import weakref
from types import SimpleNamespace

import torch

from ..bounds import Ball, Engine
from ..bounds.rules import SLACK, Linear
from ..models.lipschitz import conv_upper_bound

GLOBAL_METHODS = ("lipschitz", "peck")
# max |f'| over the reals of the elementwise activations: ReLU, Clip, tanh and softplus 1, the sigmoid 1/4
ACTIVATION_LIPSCHITZ = {"Relu": 1.0, "Clip": 1.0, "Tanh": 1.0, "Softplus": 1.0, "Sigmoid": 0.25}
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _abs_norm(rule: Linear, node, shape) -> float:
    """√(‖A‖₁‖A‖∞) of the operator's linear part from |A|: row sums |A|·1, column sums |A|ᵀ·1."""
    ones = torch.ones((1, *shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        rows = rule.abs_linear(node, ones)
        (cols,) = torch.autograd.grad(rows, ones, torch.ones_like(rows))
    return math.sqrt(float(rows.detach().max()) * float(cols.max()))


def _lp_window(p: float, count: int) -> float:
    """max ‖v‖_p / ‖v‖_2 over vectors of `count` entries: count^(1/p - 1/2) for p < 2, else 1."""
    return count ** max(0.0, 1 / p - 0.5)


def operator_norm(engine: Engine, index: int, shape: tuple[int, ...]) -> float:
    """A sound upper bound of node `index`'s L2 operator norm (its linear part) on inputs of `shape`."""
    node, rule = engine.graph.nodes[index], engine.rules[index]
    if node.op in ACTIVATION_LIPSCHITZ:
        return ACTIVATION_LIPSCHITZ[node.op]
    if node.op in ("MaxPool", "LpPool"):
        kernel = node.attr("kernel_shape")
        strides = node.attr("strides", [1] * len(kernel))
        overlap = math.sqrt(math.prod(math.ceil(k / s) for k, s in zip(kernel, strides, strict=True)))
        if node.op == "MaxPool":
            return overlap
        return _lp_window(rule.power(node), math.prod(kernel)) * overlap * (1 + SLACK)
    if node.op == "GlobalLpPool":
        return _lp_window(rule.power(node), math.prod(shape[1:])) * (1 + SLACK)
    if node.op == "LRN":
        return rule.lipschitz_bound(node) * (1 + SLACK)
    if not isinstance(rule, Linear) or rule.nonlinear_at(node):
        raise node.refuse("no Lipschitz rule for this operator (certify with ibp, crown or alpha-crown)")
    bound = _abs_norm(rule, node, shape)
    if node.op in ("Gemm", "MatMul"):
        bound = min(bound, float(torch.linalg.matrix_norm(rule._parts(node)[0], ord=2)))
    elif node.op == "Conv" and node.const(1).dim() == 4:
        w = node.const(1)
        pads = node.attr("pads", [0] * 4)
        conv = SimpleNamespace(weight=w, groups=node.attr("group", 1), padding=(max(pads[0], pads[2]),
                               max(pads[1], pads[3])), dilation=tuple(node.attr("dilations", [1, 1])))
        bound = min(bound, conv_upper_bound(conv, shape))
    return bound * (1 + SLACK)


def tensor_lipschitz(engine: Engine, input_shape: tuple[int, ...]) -> dict[str, float]:
    """L(t) for every tensor t of the graph (cached per engine and input shape)."""
    key = tuple(input_shape)
    cached = _CACHE.setdefault(engine, {})
    if key in cached:
        return cached[key]
    with torch.no_grad():
        values = engine.forward(torch.zeros((1, *input_shape), dtype=torch.float64))
    lip = {engine.graph.input: 1.0}
    for i, node in enumerate(engine.graph.nodes):
        ins = [lip[n] for n in node.dynamic]
        if len(ins) == 2 and node.op in ("Add", "Sub"):
            out = ins[0] + ins[1]
        elif node.op == "Concat":
            out = math.sqrt(sum(v * v for v in ins))
        else:
            out = operator_norm(engine, i, tuple(values[node.dynamic[0]].shape[1:])) * ins[0]
        lip[node.outputs[0]] = out * (1 + SLACK)
    cached[key] = lip
    return lip


def l2_radius(ball: Ball) -> torch.Tensor:
    """ε₂ per point [B, 1]: the radius of an L2 ball holding the ball."""
    B, d = ball.x.shape[0], ball.x[0].numel()
    r = ball.radius.reshape(-1) if torch.is_tensor(ball.radius) and ball.radius.dim() else ball.radius
    r = torch.as_tensor(r, dtype=ball.x.dtype, device=ball.x.device).expand(B)
    return (r if ball.norm == "2" else r * math.sqrt(d)).unsqueeze(1)


def margin_slopes(engine: Engine, x: torch.Tensor, labels: torch.Tensor, method: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, s) [B, K]: m_j a lower bound of y_label - y_j at x, s_j its L2 Lipschitz constant in the input, so that
    y_label - y_j >= m_j - s_j·‖δ‖₂ (before the final slack)."""
    lip = tensor_lipschitz(engine, tuple(x.shape[1:]))
    at = engine.bounds(Ball(x, 0.0), "ibp")
    lo, hi = at[engine.graph.output]
    rows = torch.arange(lo.shape[0], device=lo.device)
    margin = lo[rows, labels].unsqueeze(1) - hi
    last = engine.graph.nodes[engine.producer[engine.graph.output]]
    if method == "peck" and last.op in ("Gemm", "MatMul") and len(last.dynamic) == 1:
        w = engine.rules[engine.producer[engine.graph.output]]._parts(last)[0].to(lo.dtype).T  # [K, in]
        spread = (w[labels].unsqueeze(1) - w.unsqueeze(0)).norm(dim=-1) * (1 + SLACK)  # [B, K]
        slope = spread * lip[last.dynamic[0]]
    else:
        slope = math.sqrt(2) * lip[engine.graph.output] * torch.ones_like(margin)
    return margin, slope


def global_margins(engine: Engine, ball: Ball, labels: torch.Tensor, method: str) -> torch.Tensor:
    """Lower bounds [B, K] of y_label - y_j over the ball (+inf at j = label) from Lipschitz constants."""
    margin, slope = margin_slopes(engine, ball.x, labels, method)
    result = margin - slope * l2_radius(ball) * (1 + SLACK)
    result[torch.arange(len(result), device=result.device), labels] = math.inf
    return result
