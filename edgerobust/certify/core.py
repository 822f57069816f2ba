"""Certificates for an artifact in the arithmetic of the device: margins over the ball minus error terms.

A point is certified for the artifact under an arithmetic model only if, over the whole ball (L∞ or L2 ∩ [0, 1]),
the lower bound of every logit difference y_label - y_j of the artifact's real-valued function exceeds the forward
error bound of the two logits (|x| bounded by the tensors' intervals over the ball, overflow ruled out):
margin_j - e_label - e_j > 0. Barmpas ch. 7 certifies the real network only; "No Soundness in the Real World"
(arXiv 2506.01054) shows why the arithmetic must be in the certificate. Margins come from the bound engine (IBP,
CROWN, α-CROWN) or from Lipschitz constants (lipschitz.py: the Lipschitz-margin certificate and Peck's sound
bounds). Where an arithmetic gives no finite bound (γ_n infinite at some fan-in, or possible overflow) the model
is reported `vacuous` with the reason, never a number.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..bounds import Arithmetic, Ball, Engine, Unbounded, magnitudes
from ..bounds.engine import DEFAULT_BUDGET
from ..errors import EdgeRobustError
from .lipschitz import GLOBAL_METHODS, global_margins


@dataclass
class PointCertificates:
    """Per point: the real margin lower bound, and per arithmetic model the certified flags (or why vacuous)."""

    margin: np.ndarray  # [N] min_j lower bound of y_label - y_j (real arithmetic)
    certified: dict[str, np.ndarray]  # model name -> [N] bool
    vacuous: dict[str, str]  # model name -> reason, where no finite error bound exists
    # model name -> [N, C] lower bound of y_label - y_j over the ball in that arithmetic (NaN in the label's column
    # and where vacuous): what the device's outputs are checked against (remote/certify_check.py)
    bounds: dict[str, np.ndarray] = field(default_factory=dict)
    # model name -> ([N, C], [N, C]) lower and upper bounds of each computed logit over the ball in that arithmetic
    # (the exact logit's bounds widened by its error term; NaN where vacuous); only where asked for (`intervals`)
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @staticmethod
    def join(parts: list[PointCertificates]) -> PointCertificates:
        """The certificates of consecutive parts of the points, as one (vacuous reasons: any part's)."""
        names = list(parts[0].certified)
        spans = {m: tuple(np.concatenate([p.intervals[m][k] for p in parts]) for k in (0, 1))
                 for m in parts[0].intervals}
        return PointCertificates(np.concatenate([p.margin for p in parts]),
                                 {m: np.concatenate([p.certified[m] for p in parts]) for m in names},
                                 {k: v for p in parts for k, v in p.vacuous.items()},
                                 {m: np.concatenate([p.bounds[m] for p in parts]) for m in names}, spans)


def check_labels(labels: torch.Tensor, classes: int) -> None:
    bad = (labels < 0) | (labels >= classes)
    if bool(bad.any()):
        raise EdgeRobustError(f"label {int(labels[bad][0])} is out of range for {classes} classes; labels must lie in "
                              f"0..{classes - 1}")


def batch_size(engine: Engine, x: torch.Tensor, classes: int, budget: int) -> int:
    """Points per batch so that the widest tensor times the specs fits the memory budget."""
    widest = max(t.numel() // x.shape[0] for t in engine.forward(x[:1]).values())
    return max(1, budget // max(1, widest * 8 * 8 * max(classes, 4)))


def logit_bounds(engine: Engine, ball: Ball, table, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) [B, C] of every exact logit over the ball: the table's (IBP, or CROWN's intermediate-refined IBP),
    tightened for CROWN and α-CROWN by one backward pass with the specs ±e_j (CROWN's own per-logit bounds; no slope
    optimisation), intersected so never looser than the table."""
    lo, hi = table[engine.graph.output]
    if method not in ("crown", "alpha-crown"):
        return lo, hi
    B, K = lo.shape
    C = torch.zeros((2 * K, B, K), dtype=lo.dtype, device=lo.device)
    C[torch.arange(K), :, torch.arange(K)] = 1.0
    C[K + torch.arange(K), :, torch.arange(K)] = -1.0
    bound = ball.lower(*engine.backward(engine.graph.output, C, table))  # [2K, B]
    return torch.maximum(lo, bound[:K].T), torch.minimum(hi, -bound[K:].T)


def certify_batch(engine: Engine, x: torch.Tensor, labels: torch.Tensor, eps, norm: str, method: str,
                  models: list[Arithmetic], budget: int = DEFAULT_BUDGET, intervals: bool = False
                  ) -> PointCertificates:
    """Certify one batch; `intervals`: also bound each computed logit over the ball (what the device check checks
    besides the margins)."""
    with torch.no_grad():
        ball = Ball(x, eps, norm)
        if method in GLOBAL_METHODS:  # the error terms take their magnitudes from IBP over the ball
            margins, table = global_margins(engine, ball, labels, method), engine.bounds(ball, "ibp")
        else:
            margins, table = engine.margins(ball, labels, method, budget)
        out_lo, out_hi = logit_bounds(engine, ball, table, method) if intervals else (None, None)
        rows = torch.arange(x.shape[0])
        certified, vacuous, bounds, spans = {}, {}, {}, {}
        for ar in models:
            if ar.unit_roundoff == 0 and ar.weight_roundoff == 0 and ar.input_roundoff == 0:
                certified[ar.name] = (margins.min(1).values > 0).numpy()
                bounds[ar.name] = _label_nan(margins, rows, labels)
                if intervals:
                    spans[ar.name] = (out_lo.numpy().copy(), out_hi.numpy().copy())
                continue
            try:
                e = engine.errors(magnitudes(table), ar, table)[engine.graph.output]
            except Unbounded as reason:
                vacuous[ar.name] = (f"no finite error bound under {ar.name} at {reason} (γ_n infinite from fan-in "
                                    f"{ar.vacuous_fan_in()}, or a value may overflow)")
                certified[ar.name] = np.zeros(x.shape[0], bool)
                bounds[ar.name] = np.full(tuple(margins.shape), np.nan)
                if intervals:
                    spans[ar.name] = (np.full(tuple(margins.shape), np.nan), np.full(tuple(margins.shape), np.nan))
                continue
            fp = margins - e[rows, labels].unsqueeze(1) - e
            bounds[ar.name] = _label_nan(fp, rows, labels)
            fp[rows, labels] = np.inf
            certified[ar.name] = (fp.min(1).values > 0).numpy()
            if intervals:
                spans[ar.name] = ((out_lo - e).numpy(), (out_hi + e).numpy())
    return PointCertificates(margins.min(1).values.numpy(), certified, vacuous, bounds, spans)


def _label_nan(margins: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    out = margins.detach().to(torch.float64).clone()
    out[rows, labels] = float("nan")
    return out.numpy()


def certify_points(engine: Engine, x: np.ndarray, labels: np.ndarray, eps: float, norm: str, method: str,
                   models: list[Arithmetic], budget: int = DEFAULT_BUDGET, intervals: bool = False
                   ) -> PointCertificates:
    """`certify_batch` over all points in batches that fit the budget (`intervals`: per-logit bounds too)."""
    xt = torch.from_numpy(np.asarray(x, np.float64))
    yt = torch.from_numpy(np.asarray(labels, np.int64))
    classes = int(engine.output(xt[:1]).shape[1])
    check_labels(yt, classes)
    size = batch_size(engine, xt, classes, budget)
    parts = [certify_batch(engine, xt[i:i + size], yt[i:i + size], eps, norm, method, models, budget, intervals)
             for i in range(0, len(xt), size)]
    return PointCertificates.join(parts)


def certified_radius(engine: Engine, x: np.ndarray, labels: np.ndarray, norm: str, method: str, model: Arithmetic,
                     high: float = 0.5, steps: int = 12, budget: int = DEFAULT_BUDGET) -> np.ndarray:
    """Per point the largest ε certified under `model`, by bisection on [0, high] (0 where ε = 0 fails).

    Bisection (Barmpas eq. 7.14 uses Newton's method; either is valid): the returned ε is certified; the true
    largest radius of this method lies within high·2^-steps above it.
    """
    xt = torch.from_numpy(np.asarray(x, np.float64))
    yt = torch.from_numpy(np.asarray(labels, np.int64))
    classes = int(engine.output(xt[:1]).shape[1])
    check_labels(yt, classes)
    size = batch_size(engine, xt, classes, budget)
    result = []
    for i in range(0, len(xt), size):
        xb, yb = xt[i:i + size], yt[i:i + size]
        lo, hi = torch.zeros(len(xb), dtype=torch.float64), torch.full((len(xb),), float(high), dtype=torch.float64)
        ok0 = torch.from_numpy(certify_batch(engine, xb, yb, 0.0, norm, method, [model], budget).certified[model.name])
        for _ in range(steps):
            mid = (lo + hi) / 2
            found = certify_batch(engine, xb, yb, mid, norm, method, [model], budget)
            ok = torch.from_numpy(found.certified[model.name])
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        result.append(torch.where(ok0, lo, torch.zeros_like(lo)).numpy())
    return np.concatenate(result)
