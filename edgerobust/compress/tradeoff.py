"""The trade-off table: keep ratio × (clean, PGD-k, standard suite), in the shape of Marshall's Table 4.2."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks import get_attack
from ..data import ArrayDataset
from ..training import evaluate_clean


def evaluation_subset(test: ArrayDataset, n: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test points: the same points for every model compared, and the same points `evaluate --n`
    attacks, so a PGD figure and a suite figure side by side describe one set of points. (`seed` is unused.)"""
    subset = test.subset(n)
    return subset.images, subset.labels


def evaluate_point(model: nn.Module, test: ArrayDataset, eps: float, *, pgd_steps: int = 20, suite: bool = False,
                   n: int | None = None, seed: int = 0, progress: bool | None = False) -> dict[str, Any]:
    """Clean accuracy on the whole test split; PGD-k and (optionally) the cumulative standard suite on a subset."""
    from ..evaluation import robust_accuracy, standard_suite

    model.eval()
    images, labels = evaluation_subset(test, n, seed)
    row: dict[str, Any] = {"clean": evaluate_clean(model, test)["accuracy"], "eps": eps, "n_attacked": len(labels)}
    pgd = get_attack("pgd", eps=eps, steps=pgd_steps)
    row[f"pgd{pgd_steps}"] = robust_accuracy(model, images, labels, pgd, progress=progress)
    row["pgd_steps"] = pgd_steps
    if suite:
        result = standard_suite(model, images, labels, eps, seed=seed, progress=progress)
        row["suite"] = result.to_dict()["cumulative"]
    return row


def tradeoff_columns(rows: list[dict[str, Any]]) -> list[str]:
    steps = rows[0].get("pgd_steps", 20) if rows else 20
    columns = ["model", "kept", "params", "clean", f"PGD-{steps}"]
    suite = next((r["suite"] for r in rows if r.get("suite")), None)
    if suite:
        columns += [f"suite: {name}" for name, _ in suite[1:]]
    return columns


def tradeoff_table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows of the table; accuracies in percent, the suite columns cumulative (never increasing left to right)."""
    out = []
    for r in rows:
        steps = r.get("pgd_steps", 20)
        line = [r.get("label", ""), f"{100 * r['keep']:.0f}%", r.get("params"), 100 * r["clean"],
                100 * r[f"pgd{steps}"]]
        line += [100 * acc for _, acc in (r.get("suite") or [])[1:]]
        out.append(line)
    return out
