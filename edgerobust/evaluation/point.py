"""One point of an accuracy trade-off: clean accuracy on the whole test split, PGD-k and (optionally) the cumulative
standard suite on a fixed seeded subset — a row of Marshall's Table 4.2 (keep ratio × clean, PGD, suite).

The compression stage evaluates its dense and pruned models with it; `edgerobust.report.tradeoff` formats the rows.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks import get_attack
from ..data import ArrayDataset
from ..training.metrics import evaluate_clean
from .suite import robust_accuracy, standard_suite


def evaluation_subset(test: ArrayDataset, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test points: the same points for every model compared, and the same points `evaluate --n`
    attacks, so a PGD figure and a suite figure side by side describe one set of points."""
    subset = test.subset(n)
    return subset.images, subset.labels


def evaluate_point(model: nn.Module, test: ArrayDataset, eps: float, *, pgd_steps: int = 20, suite: bool = False,
                   n: int | None = None, seed: int = 0, progress: bool | None = False) -> dict[str, Any]:
    """Clean accuracy on the whole test split; PGD-k and (optionally) the cumulative standard suite on a subset."""
    model.eval()
    images, labels = evaluation_subset(test, n)
    row: dict[str, Any] = {"clean": evaluate_clean(model, test)["accuracy"], "eps": eps, "n_attacked": len(labels)}
    pgd = get_attack("pgd", eps=eps, steps=pgd_steps)
    row[f"pgd{pgd_steps}"] = robust_accuracy(model, images, labels, pgd, progress=progress)
    row["pgd_steps"] = pgd_steps
    if suite:
        result = standard_suite(model, images, labels, eps, seed=seed, progress=progress)
        row["suite"] = result.to_dict()["cumulative"]
    return row
