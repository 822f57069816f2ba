"""Peck's lower bounds κ(x) on the L2 norm of the smallest perturbation that changes the prediction, in two modes,
with a violation checker against the smallest perturbations the attacks find (Peck, "Robustness of Classifiers to
Adversarial Perturbations", seed 003; the reference digest peck-lower-bounds.md lists the flaws checked here).

* `thesis` (as published, to reproduce the thesis's tables; NOT a certificate): the output layer's exact linear
  bound δ(h) = min_{c'≠c} |(w_c' - w_c)·h + b_c' - b_c| / ‖w_c' - w_c‖ (Lemma 3.5 / Thm 3.6); the MLP block at the
  end of the network by Thm 4.2, Δ >= (√(‖J‖² + 2M√n·δ) - ‖J‖) / (M√n) with J the Jacobian of the last hidden
  layer at x, n its width and M from Alg. 4.1 with Table 4.1's derivative bounds (ReLU's second derivative taken as
  1, the thesis's heuristic; tanh's 0.3849, half the true 4/(3√3)); then backwards (Alg. 5.1) Conv(+ReLU)
  κ/‖W‖_F (Thm 5.1), max/average pooling κ/t with t the output side and Lp pooling κ/(t·q^(2/p)) (Thm 5.3), batch norm
  max_j δ_j (Thm 5.6), local response normalisation max_{a∈Δ} λ_a with Lemma 5.11's M (Thm 5.9);
  Flatten and moves pass κ. The input normalisation (x - mean)/std has no rule in the thesis; κ·min|std| is used
  (exact for an elementwise affine map). Residual connections are not in the thesis and are refused.
  Where it is unsound, shown by tests/test_peck.py: Thm 5.1 (‖W⋆R‖_F <= ‖W‖_F‖R‖_F fails for overlapping windows),
  Thm 5.6 (max_j where min_j is needed), Thm 4.2 on ReLU networks (ReLU is not twice differentiable; B = 1 does
  not bound what its kink does) and Thm 4.2 with tanh's table entry (half the true bound).
* `sound` (proven, float64 with the engine's outward slack): the last linear layer exactly and the Lipschitz
  constant of everything below it (lipschitz.py: κ_in = κ_out / Lip per layer, the digest's sound rule):
  κ(x) = min_j m_j(x) / (‖w_c - w_j‖₂·L(h)), or m_j / (√2·L(logits)) without a final linear layer.

Both are about the real-valued function of the artifact (the `real` arithmetic model) at its predicted class c,
in pixel units; neither uses the [0, 1] box, so each also bounds perturbations that stay in it. The checker runs
minimal attacks (Peck's FGS binary search, DeepFool, ...) on that same float64 function and counts the points
whose found perturbation is shorter than κ(x): for the sound mode that count must be zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..bounds import Engine
from ..bounds.graph import BoundError, Node
from ..bounds.rules import SLACK
from ..errors import EdgeRobustError
from .lipschitz import margin_slopes

PECK_MODES = ("thesis", "sound")
DEFAULT_ATTACKS = ("fgs-search", "deepfool")

# Table 4.1 as published: (first, second) derivative bounds. ReLU's second derivative is 0 in the table and 1 in
# the experiments (§4.3.1, option 3); the tanh entry evaluates to 0.3849, half of max|tanh''| = 4/(3√3) ≈ 0.7698.
_TANH_AT = 0.5 * math.log(2 + math.sqrt(3))
THESIS_DERIVATIVES: dict[str, tuple[float, float]] = {
    "Sigmoid": (0.25, (5 - 3 * math.sqrt(3)) / (30 * math.sqrt(3) - 54)),
    "Tanh": (1.0, math.sinh(_TANH_AT) / math.cosh(_TANH_AT) ** 3),
    "Softplus": (1.0, 0.25),
    "Relu": (1.0, 1.0),
}
_PASS = ("Flatten", "Reshape", "Transpose", "Identity", "Dropout", "Cast")
_THESIS_NOTE = ("thesis mode (Peck as published) is NOT a certificate: its convolution (Thm 5.1), batch-norm "
                "(Thm 5.6) and MLP-block (Thm 4.2 on ReLU with B = 1, or with tanh's table entry) bounds are not "
                "valid lower bounds")
_SOUND_NOTE = ("sound mode: a proven lower bound on the L2 norm of any perturbation that changes the prediction of "
               "the artifact's real-valued function (last linear layer exact, Lipschitz below it), float64")


class PeckError(EdgeRobustError):
    """A graph Peck's thesis gives no rule for, or an unknown mode."""


def check_mode(mode: str) -> str:
    if mode not in PECK_MODES:
        raise PeckError(f"unknown Peck mode '{mode}'; choose one of {', '.join(PECK_MODES)}")
    return mode


def check_attacks(attacks: tuple[str, ...]) -> tuple[str, ...]:
    """The violation checker's attacks: registered minimal-perturbation attacks, at least one (one line if not)."""
    from ..attacks import ATTACKS

    if not attacks:
        raise PeckError("--peck-attacks needs at least one minimal attack (e.g. fgs-search,deepfool)")
    minimal = [n for n in ATTACKS.names() if getattr(ATTACKS.get(n), "minimal", False)]
    for name in attacks:
        ATTACKS.get(name)  # unknown names: one line listing the known ones
        if name not in minimal:
            raise PeckError(f"--peck-attacks {name} is not a minimal-perturbation attack; choose among "
                            f"{', '.join(minimal)}")
    return attacks


# --- sound mode ---------------------------------------------------------------------------------------------------
def sound_bounds(engine: Engine, x: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
    """κ(x) [N], a proven lower bound (0 where the prediction is a tie at x)."""
    if bool((x < 0).any() or (x > 1).any()):
        raise PeckError("Peck's sound bounds take pixels in [0, 1] (the engine's balls are intersected with that "
                        f"box); got values in [{float(x.min()):g}, {float(x.max()):g}]")
    with torch.no_grad():
        margin, slope = margin_slopes(engine, x, predicted, "peck")
        ratio = margin.clamp_min(0) / (slope * (1 + SLACK) ** 2)
        ratio[torch.arange(len(x)), predicted] = math.inf
        return (ratio.min(1).values * (1 - SLACK)).numpy()


# --- thesis mode --------------------------------------------------------------------------------------------------
@dataclass
class _Chain:
    """The graph as Peck's Alg. 5.1 sees it: the output layer, the MLP block's hidden layers above it, and the
    layers below the block (nearest the block first)."""

    output: int  # index of the output layer (Gemm/MatMul)
    hidden: list[tuple[int, int]]  # (affine, activation) node indices of the MLP block, first layer first
    below: list[int]  # the nodes under the block, from the block's input down to the graph input


def _producer(engine: Engine, name: str) -> int | None:
    return engine.producer.get(name)


def _single_input(node: Node) -> str:
    if len(node.dynamic) != 1:
        raise PeckError(f"Peck's thesis has no rule for {node.label()} with {len(node.dynamic)} computed inputs "
                        "(residual connections are not in the thesis); use --peck-mode sound")
    return node.dynamic[0]


def _chain(engine: Engine) -> _Chain:
    nodes = engine.graph.nodes
    out = _producer(engine, engine.graph.output)
    if out is None or nodes[out].op not in ("Gemm", "MatMul"):
        raise PeckError("Peck's bounds start from a final linear layer (Gemm/MatMul); this graph ends in "
                        f"{nodes[out].op if out is not None else 'its input'}")
    hidden: list[tuple[int, int]] = []
    name = _single_input(nodes[out])
    while True:  # the MLP block: activation(Gemm(...)) repeated
        act = _producer(engine, name)
        if act is None or nodes[act].op not in THESIS_DERIVATIVES:
            break
        affine = _producer(engine, _single_input(nodes[act]))
        if affine is None or nodes[affine].op not in ("Gemm", "MatMul"):
            break
        hidden.insert(0, (affine, act))
        name = _single_input(nodes[affine])
    below = []
    while name != engine.graph.input:
        index = _producer(engine, name)
        below.append(index)
        name = _single_input(nodes[index])
    return _Chain(out, hidden, below)


def check_graph(engine: Engine) -> None:
    """Refuse, in one line, a graph Peck's thesis has no rule for (before any work)."""
    chain = _chain(engine)
    for index in chain.below:
        node = engine.graph.nodes[index]
        scaled = node.op in ("Sub", "Add", "Div", "Mul") and len(node.dynamic) == 1
        if node.op not in (*_PASS, "Relu", "Clip", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
                           "BatchNormalization", "LpPool", "GlobalLpPool", "LRN") and not scaled:
            raise PeckError(f"Peck's thesis has no rule for {node.label()}; use --peck-mode sound")


def _weight(engine: Engine, index: int) -> torch.Tensor:
    """The constant W of x·W (+ b) of a Gemm/MatMul node, [in, out]."""
    return engine.rules[index]._parts(engine.graph.nodes[index])[0].to(torch.float64)


def output_delta(engine: Engine, index: int, h: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Lemma 3.5 / Thm 3.6 at the output layer's input h [N, n]: min over c' of the distance to the boundary."""
    node = engine.graph.nodes[index]
    logits = engine.rules[index].forward(node, h)
    w = _weight(engine, index).T  # [K, n]
    rows = torch.arange(len(h))
    gap = (logits[rows, predicted].unsqueeze(1) - logits).abs()  # |(w_c' - w_c)·h + b_c' - b_c|
    spread = (w[predicted].unsqueeze(1) - w.unsqueeze(0)).norm(dim=-1)
    dist = gap / spread
    dist[rows, predicted] = math.inf
    return dist.min(1).values


def mlp_m(engine: Engine, hidden: list[tuple[int, int]]) -> float:
    """Alg. 4.1: M bounding every second partial derivative of the last hidden layer, from s = max_j Σ_k |v_jk|."""
    m, n = 0.0, 1.0
    for affine, act in hidden:
        a, b = THESIS_DERIVATIVES[engine.graph.nodes[act].op]
        s = float(_weight(engine, affine).abs().sum(0).max())  # W is [in, out]: the row sums of V = Wᵀ
        m, n = b * n * n * s * s + a * m * s, a * n * s
    return m


def _run(engine: Engine, indices: list[int], start: str, t: torch.Tensor) -> torch.Tensor:
    values = {start: t}
    for i in indices:
        node = engine.graph.nodes[i]
        values[node.outputs[0]] = engine.rules[i].forward(node, *[values[n] for n in node.dynamic])
    return values[engine.graph.nodes[indices[-1]].outputs[0]]


def jacobian_norms(engine: Engine, hidden: list[tuple[int, int]], t: torch.Tensor) -> torch.Tensor:
    """‖J_{h_L}(t)‖₂ per point: the spectral norm of the block's Jacobian at its input t [N, d]."""
    order = [i for pair in hidden for i in pair]
    start = engine.graph.nodes[hidden[0][0]].dynamic[0]
    norms = []
    for row in t:
        jac = torch.autograd.functional.jacobian(lambda v: _run(engine, order, start, v[None])[0], row)
        norms.append(torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1), ord=2))
    return torch.stack(norms)


def thm42(delta: torch.Tensor, jnorm: torch.Tensor, m: float, n: int) -> torch.Tensor:
    """(√(‖J‖² + 2M√n·δ) - ‖J‖) / (M√n), written as 2δ / (√(‖J‖² + 2M√n·δ) + ‖J‖) (no cancellation)."""
    k = m * math.sqrt(n)
    if k == 0:
        return delta / jnorm
    return 2 * delta / (torch.sqrt(jnorm ** 2 + 2 * k * delta) + jnorm)


def thesis_layer(node: Node, kappa: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """κ at the node's input from κ at its output (Thm 5.1, 5.3, 5.6 as published); x, y its input and output."""
    op = node.op
    if op in _PASS or op in ("Relu", "Clip"):  # Conv+ReLU is one layer in Thm 5.1; ReLU6 is taken as ReLU
        return kappa
    if op == "Conv":
        return kappa / node.const(1).norm()  # Thm 5.1: κ / ‖W‖_F (unsound: overlapping windows)
    if op in ("MaxPool", "AveragePool", "GlobalAveragePool"):
        t = math.sqrt(math.prod(y.shape[2:]))  # Thm 5.3: the output's side length (√(H·W) if not square)
        return kappa / t
    if op in ("LpPool", "GlobalLpPool"):  # Thm 5.3: κ / (t·q^(2/p)), q the receptive field's side
        t = math.sqrt(math.prod(y.shape[2:]))
        field = math.prod(node.attr("kernel_shape")) if op == "LpPool" else math.prod(x.shape[2:])
        return kappa / (t * math.sqrt(field) ** (2 / float(node.attr("p", 2))))
    if op == "LRN":
        return _thesis_lrn(node, kappa, x, y)
    if op == "BatchNormalization":
        return _thesis_bn(node, kappa, x, y)
    if op in ("Sub", "Add", "Div", "Mul") and len(node.dynamic) == 1:
        c = next(node.const(i) for i in range(len(node.inputs)) if node.const(i) is not None).to(x.dtype)
        if op in ("Sub", "Add"):
            return kappa
        if op == "Div" and node.const(1) is None:
            raise PeckError(f"Peck's thesis has no rule for {node.label()} (a constant divided by a tensor)")
        scale = 1 / c.abs() if op == "Div" else c.abs()
        return kappa / float(scale.max())
    raise PeckError(f"Peck's thesis has no rule for {node.label()}; use --peck-mode sound")


def _thesis_bn(node: Node, kappa: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Thm 5.6: max_j δ_j of the per-element quadratic (unsound: min_j is needed)."""
    gamma, beta, mean, var = (node.const(i).to(x.dtype) for i in range(1, 5))
    shape = (1, -1, *([1] * (x.dim() - 2)))
    root = torch.sqrt(var + node.attr("epsilon", 1e-5)).reshape(shape)
    gamma, beta, mean = gamma.reshape(shape), beta.reshape(shape), mean.reshape(shape)
    phi = gamma / root ** 2
    chi = 2 * gamma * (x - mean) + 2 * beta * root
    d = x[0].numel()
    k = kappa.reshape(-1, *([1] * (x.dim() - 1)))
    psi = (2 * k * y.flatten(1).norm(dim=1).reshape(k.shape) + k * k) / d
    disc = torch.sqrt(phi ** 2 * chi ** 2 + 4 * phi * gamma * psi)
    rho1 = -(disc + phi * chi) / (2 * phi * gamma)
    rho2 = (disc - phi * chi) / (2 * phi * gamma)
    delta = torch.minimum(rho1.abs(), rho2.abs())
    return delta.flatten(1).max(1).values


def _thesis_lrn(node: Node, kappa: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Thm 5.9 with Lemma 5.11's M as published: max over a ∈ Δ of λ_a (unsound: min_a is needed, M ignores the
    mixed second derivatives and is taken at X only). The thesis's α is Krizhevsky's, ONNX's α/size."""
    from ..bounds.rules.normalization import channel_window

    size = int(node.attr("size"))
    a, beta, k = float(node.attr("alpha", 1e-4)) / size, float(node.attr("beta", 0.75)), float(node.attr("bias", 1.0))
    if not (a > 0 and 0 < beta < 1 and k > 0):
        raise PeckError(f"Peck's Lemma 5.11 assumes alpha > 0, 0 < beta < 1 and bias > 0 (Assumption 5.10); "
                        f"{node.label()} has alpha {a * size:g}, beta {beta:g}, bias {k:g}; use --peck-mode sound")
    n = x[0].numel()
    s = channel_window(x * x, size)
    d = k + a * s
    diagonal = d ** -beta - 2 * a * beta * x * x * d ** (-beta - 1)
    across = 2 * a * beta * x.abs() * d ** (-beta - 1)  # |∂y_a/∂x_j| = across·|x_j| for j ≠ a in the window
    grad = torch.sqrt(diagonal ** 2 + across ** 2 * (s - x * x).clamp_min(0)).flatten(1)
    delta = (y.abs().flatten(1) - ((y.flatten(1).norm(dim=1) + kappa) / math.sqrt(n)).unsqueeze(1))
    xmax = x.abs().flatten(1).max(1).values.unsqueeze(1)
    m = (4 * xmax * a * beta * (xmax ** 2 * a * (beta + 1) * k ** (-beta - 2) + k ** (-beta - 1))
         + 2 * xmax * a * beta * k ** (-beta - 1))
    lam = -2 * delta / (torch.sqrt(grad ** 2 - 2 * m * delta) + grad)  # (√(‖∇‖² - 2Mδ) - ‖∇‖) / M, stably
    return torch.where(delta < 0, lam, torch.zeros_like(lam)).max(1).values


def thesis_bounds(engine: Engine, x: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
    """κ(x) [N] as the thesis computes it (Alg. 5.1 with the MLP block of Thm 4.2 at the top): NOT a bound."""
    chain = _chain(engine)
    with torch.no_grad():
        values = engine.forward(x)
    nodes = engine.graph.nodes
    h = values[nodes[chain.output].dynamic[0]]
    kappa = output_delta(engine, chain.output, h.flatten(1), predicted)
    if chain.hidden:
        t = values[nodes[chain.hidden[0][0]].dynamic[0]].flatten(1)
        kappa = thm42(kappa, jacobian_norms(engine, chain.hidden, t).detach(), mlp_m(engine, chain.hidden),
                      h[0].numel())
    for index in chain.below:
        node = nodes[index]
        kappa = thesis_layer(node, kappa, values[node.dynamic[0]], values[node.outputs[0]])
    return kappa.detach().numpy()


def peck_bounds(engine: Engine, x: np.ndarray | torch.Tensor, predicted: np.ndarray | torch.Tensor,
                mode: str) -> np.ndarray:
    """κ(x) per point in `mode` (thesis or sound), float64, at the predicted classes."""
    check_mode(mode)
    xt = torch.as_tensor(np.asarray(x, np.float64))
    yt = torch.as_tensor(np.asarray(predicted, np.int64))
    try:
        return thesis_bounds(engine, xt, yt) if mode == "thesis" else sound_bounds(engine, xt, yt)
    except BoundError as exc:
        raise PeckError(str(exc)) from None


# --- the violation checker ----------------------------------------------------------------------------------------
class EngineModel(nn.Module):
    """The artifact's real-valued function (the engine's float64 forward pass) as a differentiable model, so the
    attacks search the very function the bounds are about."""

    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine
        self.register_buffer("anchor", torch.zeros((), dtype=torch.float64))  # placement: float64 on the CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine.output(x.to(torch.float64))


def violations(kappa: np.ndarray, found: np.ndarray) -> dict[str, Any]:
    """Points whose found perturbation (L2, NaN where the attacks found none) is shorter than κ: a bound that is
    violated there is not a lower bound. Compared exactly in float64."""
    kappa, found = np.asarray(kappa, np.float64), np.asarray(found, np.float64)
    bad = np.isfinite(found) & (found < kappa)
    have = np.isfinite(found) & (kappa > 0)
    return {"violations": int(bad.sum()), "violating_points": [int(i) for i in np.flatnonzero(bad)],
            "worst_ratio": float((kappa[have] / found[have]).max()) if have.any() else None}


def attack_minima(engine: Engine, x: np.ndarray, predicted: np.ndarray,
                  attacks: tuple[str, ...] = DEFAULT_ATTACKS) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Per point the shortest adversarial perturbation (L2, NaN where none) that any of the minimal attacks
    (evaluation/minimal.py) finds on the artifact's float64 function at the predicted labels, and the attacks."""
    from ..evaluation.minimal import minimal_norms

    model = EngineModel(engine).eval()
    images = torch.as_tensor(np.asarray(x, np.float64))
    labels = torch.as_tensor(np.asarray(predicted, np.int64))
    best = np.full(len(images), np.nan)
    described = []
    for name in attacks:
        found = minimal_norms(model, images, labels, name, norm="l2")
        described.append(found["attack"])
        norms = found["l2"].numpy()
        best = np.where(np.isnan(best) | (norms < best), norms, best)
    return best, described


def minimal_summary(kappa: np.ndarray, best: np.ndarray, described: list[dict[str, Any]]) -> dict[str, Any]:
    """The attacks' shortest perturbations per point beside κ, and the violations of κ."""
    return {"attacks": described, "labels": "predicted (Peck)", "per_point": _nullable(best),
            "success_rate": float(np.isfinite(best).mean()),
            "mean": float(np.nanmean(best)) if np.isfinite(best).any() else None, **violations(kappa, best)}


def check_against_attacks(engine: Engine, x: np.ndarray, predicted: np.ndarray, kappa: np.ndarray,
                          attacks: tuple[str, ...] = DEFAULT_ATTACKS) -> dict[str, Any]:
    """Run each minimal attack on the artifact's float64 function at the predicted labels; per point the shortest
    adversarial perturbation found (L2) and the violations of κ."""
    return minimal_summary(kappa, *attack_minima(engine, x, predicted, attacks))


def _nullable(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def peck_points(engine: Engine, x: np.ndarray, predicted: np.ndarray, mode: str,
                attacks: tuple[str, ...] = DEFAULT_ATTACKS) -> dict[str, Any]:
    """The per-point part of `peck_section` (κ and the attacks' minima), which shards of the points can compute
    apart and concatenate."""
    kappa = peck_bounds(engine, x, predicted, mode)
    best, described = attack_minima(engine, x, predicted, attacks)
    return {"kappa": kappa, "found": best, "attacks": described}


def peck_summary(points: dict[str, Any], correct: np.ndarray, mode: str, eps: list[float], norm: str,
                 d: int) -> dict[str, Any]:
    """certificates.json's `peck` entry of one artifact: κ per point, its mean (and per pixel, Table 5.1's
    normalisation), the fraction of correctly classified points whose κ exceeds each ε (an L∞ ball of radius ε
    lies in the L2 ball of radius ε√d), and the attacks' shortest perturbations with the violations of κ."""
    kappa = points["kappa"]
    radius = (lambda e: e * math.sqrt(d)) if norm == "inf" else (lambda e: e)
    within = [{"eps": e, "fraction": float(((kappa > radius(e)) & correct).mean())} for e in eps]
    return {"mode": mode, "certificate": mode == "sound", "note": _SOUND_NOTE if mode == "sound" else _THESIS_NOTE,
            "arithmetic": "real", "norm": "2", "of": "the predicted class", "per_point": kappa.tolist(),
            "mean": float(kappa.mean()), "mean_per_pixel": float(kappa.mean() / d),
            ("certified" if mode == "sound" else "claimed"): within,
            "minimal": minimal_summary(kappa, points["found"], points["attacks"])}


def peck_section(engine: Engine, x: np.ndarray, predicted: np.ndarray, correct: np.ndarray, mode: str,
                 eps: list[float], norm: str, attacks: tuple[str, ...] = DEFAULT_ATTACKS) -> dict[str, Any]:
    """`peck_summary` of `peck_points` over all the points."""
    d = int(np.prod(np.asarray(x).shape[1:]))
    return peck_summary(peck_points(engine, x, predicted, mode, attacks), correct, mode, eps, norm, d)
