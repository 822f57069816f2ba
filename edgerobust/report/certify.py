"""The report's certification section (from certificates.json): certified accuracy per artifact precision and
arithmetic model beside the attacks' robust accuracy (Barmpas Tables 8.12/8.13), the models that are vacuous, and
the sorted per-point largest certified ε (Barmpas's "certification area", eq. 7.14)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EdgeRobustError
from ..io import read_json
from ..run import RunDir
from .plots import new_figure, save_figure
from .sections import md_table, register_section

CERTIFICATES_FILE = "certificates.json"  # written by certify/api.py (the report reads run files only)


def radius_plot(record: dict, path: Path) -> Path | None:
    fig, ax = new_figure(7, 4)
    drawn = False
    for artifact in record["artifacts"]:
        for model, radius in sorted(artifact.get("radius", {}).items()):
            values = np.sort(np.asarray(radius["per_point"], float))
            ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=f"{artifact['precision']} / {model}")
            drawn = True
    ax.set(xlabel="point (sorted)", ylabel="largest certified ε", title=f"certified radius ({record['method']}, "
                                                                       f"L{record['norm']})")
    if drawn:
        ax.legend()
    return save_figure(fig, path)


@register_section("certify", "certificates for the exported artifacts, per arithmetic model")
def certify_section(run: RunDir, figures: Path) -> str | None:
    path = run.path / CERTIFICATES_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
        rows, notes = [], []
        for artifact in record["artifacts"]:
            for row in artifact["rows"]:
                mean = artifact.get("radius", {}).get(row["arithmetic"], {}).get("mean")
                if row.get("vacuous"):
                    notes.append(f"- {artifact['precision']} under {row['arithmetic']}: {row['vacuous']}")
                rows.append([artifact["precision"], row["arithmetic"], row["eps"],
                             "vacuous" if row.get("vacuous") else row["certified_accuracy"],
                             row.get("attack_robust_accuracy"), mean, artifact["sha256"][:12]])
        plot = radius_plot(record, figures / "certified_radius.png")
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgeRobustError(f"{path} is not a certificates file written by edgerobust ({exc!r})") from None
    lines = [f"## Certification\n\n{record['method']} bounds over L{record['norm']} balls ∩ [0,1] on {record['n']} "
             "golden inputs; a point counts only if its margin survives the floating-point error terms of the "
             "arithmetic model (certified accuracy is a lower bound; the attacks' robust accuracy an upper one).\n",
             md_table(["precision", "arithmetic", "ε", "certified acc.", "attack robust acc.", "mean certified ε",
                       "artifact sha256"], rows)]
    if notes:
        lines += ["\nVacuous arithmetic models (no finite error bound, so nothing is certified):", *sorted(set(notes))]
    for precision, reason in sorted((record.get("not_certified") or {}).items()):
        lines.append(f"\nThe {precision} artifact is not certified: {reason}.")
    lines.append(f"\n![certified radius](figures/{plot.name})\n")
    return "\n".join(lines)
