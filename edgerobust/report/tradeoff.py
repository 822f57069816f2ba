"""The trade-off table's columns and rows (keep ratio × clean, PGD-k, standard suite; Marshall's Table 4.2), from
the rows `edgerobust.evaluation.point.evaluate_point` wrote into a run's `compression` section or tradeoff.json."""
from __future__ import annotations

from typing import Any


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
