"""Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019): symptoms of an evaluation that flatters
the model. Each check passes, FAILs, or was not run; a report shows every FAIL loudly."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks import get_attack
from .suite import robust_accuracy

PASS, FAIL, NOT_RUN = "pass", "FAIL", "not run"


def check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"check": name, "status": status, "detail": detail}


def curve_monotone(curve: dict[str, Any] | None, tolerance: float = 0.01) -> dict[str, str]:
    name = "accuracy does not rise with ε"
    if not curve:
        return check(name, NOT_RUN, "no robustness curve (pass --curve)")
    points = curve["points"]
    rises = [(a[0], b[0], b[1] - a[1]) for a, b in zip(points, points[1:], strict=False) if b[1] - a[1] > tolerance]
    if rises:
        lo, hi, by = max(rises, key=lambda r: r[2])
        return check(name, FAIL, f"accuracy rose by {by:.1%} from ε={lo:g} to ε={hi:g}")
    return check(name, PASS, f"non-increasing over {len(points)} ε values (tolerance {tolerance:.0%})")


def large_eps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str = "linf", steps: int = 20,
              seed: int = 0, threshold: float = 0.02, batch_size: int = 256) -> dict[str, str]:
    """A budget that covers the whole pixel cube must reach about 0% accuracy."""
    eps = 1.0 if norm == "linf" else float(images[0].numel()) ** 0.5
    accuracy = robust_accuracy(model, images, labels, get_attack("pgd", eps=eps, norm=norm, steps=steps, seed=seed),
                               batch_size, progress=False)
    status = PASS if accuracy <= threshold else FAIL
    return check("a very large ε gives about 0% accuracy", status,
                 f"PGD-{steps} at {norm} ε={eps:.3g} (the whole [0,1] cube): accuracy {accuracy:.1%} "
                 f"(must be ≤ {threshold:.0%})")


def more_effort(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, norm: str = "linf",
                steps: int = 10, seed: int = 0, tolerance: float = 0.01, batch_size: int = 256) -> dict[str, str]:
    """More steps, or more restarts, must never raise accuracy."""
    def acc(**kw):
        return robust_accuracy(model, images, labels, get_attack("pgd", eps=eps, norm=norm, seed=seed, **kw),
                               batch_size, progress=False)

    base, more_steps, more_restarts = acc(steps=steps), acc(steps=4 * steps), acc(steps=steps, restarts=3)
    worst = max(more_steps - base, more_restarts - base)
    detail = (f"PGD-{steps}: {base:.1%}, PGD-{4 * steps}: {more_steps:.1%}, PGD-{steps} × 3 restarts: "
              f"{more_restarts:.1%} at ε={eps:.4g}")
    return check("more steps or restarts never raise accuracy", FAIL if worst > tolerance else PASS, detail)


def black_box_not_stronger(suite: dict[str, Any] | None, tolerance: float = 0.01) -> dict[str, str]:
    """In the cumulative suite, the black-box attack should break (almost) nothing the white-box ones missed."""
    name = "the black-box attack is not much stronger than the white-box ones"
    if not suite or not any(name_ == "square" for name_, _ in suite["cumulative"]):
        return check(name, NOT_RUN, "no standard suite with the square attack (linf only)")
    cumulative = dict((n, a) for n, a in suite["cumulative"])
    before = suite["cumulative"][-2][1]
    extra = before - cumulative["square"]
    status = FAIL if extra > tolerance else PASS
    return check(name, status, f"square broke {extra:.1%} of all points after the white-box attacks "
                               f"(allowed {tolerance:.0%})")


def transfer_not_stronger(transfer: dict[str, Any] | None, tolerance: float = 0.01) -> dict[str, str]:
    """Examples made on another model should not beat a model's own white-box attack."""
    name = "transfer accuracy is not below white-box accuracy"
    if not transfer:
        return check(name, NOT_RUN, "no transfer matrix (pass --transfer RUN2)")
    names, matrix = transfer["models"], transfer["accuracy"]
    worst = None
    for j, target in enumerate(names):
        for i, source in enumerate(names):
            gap = matrix[j][j] - matrix[i][j]
            if i != j and gap > tolerance and (worst is None or gap > worst[0]):
                worst = (gap, source, target)
    if worst:
        gap, source, target = worst
        return check(name, FAIL, f"examples from {source} leave {target} {gap:.1%} less accurate than its own "
                                 "white-box attack")
    return check(name, PASS, f"every off-diagonal entry ≥ its column's white-box accuracy − {tolerance:.0%}")


def any_failed(checks: list[dict[str, str]]) -> bool:
    return any(c["status"] == FAIL for c in checks)
