"""The report's certification section (from certificates.json): certified accuracy per artifact precision and
arithmetic model beside the attacks' robust accuracy (Barmpas Tables 8.12/8.13), the models that are vacuous, the
sorted per-point largest certified ε (Barmpas's "certification area", eq. 7.14), and Peck's lower bounds on the
minimal perturbation beside the attacks' minima (Peck Table 5.1's shape), a thesis-mode figure labelled as no
certificate."""
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
    if record.get("peck_mode"):
        return "\n".join(["## Certification\n", *peck_lines(record, path)])
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


def peck_lines(record: dict, path: Path) -> list[str]:
    """Peck's per-point lower bounds κ (L2, real arithmetic) per artifact beside the attacks' smallest
    perturbations; the violations of κ they found."""
    try:
        thesis = record["peck_mode"] == "thesis"
        rows = []
        for artifact in record["artifacts"]:
            peck, minimal = artifact["peck"], artifact["peck"]["minimal"]
            rows.append([artifact["precision"], peck["mean"], peck["mean_per_pixel"], minimal["mean"],
                         minimal["success_rate"], minimal["violations"], artifact["sha256"][:12]])
        note, attacks = record["artifacts"][0]["peck"]["note"], record["artifacts"][0]["peck"]["minimal"]["attacks"]
    except (KeyError, TypeError, IndexError) as exc:
        raise EdgeRobustError(f"{path} is not a certificates file written by edgerobust ({exc!r})") from None
    title = ("Peck's lower bounds, **thesis mode (as published): not a certificate**" if thesis else
             "Peck's lower bounds, sound mode (a certificate)")
    names = ", ".join(str(a.get("attack", a)) if isinstance(a, dict) else str(a) for a in attacks)
    lines = [f"{title}: the L2 norm of the smallest perturbation that changes the artifact's prediction (real "
             f"arithmetic, {record['n']} golden inputs, pixel units), beside the smallest perturbations {names} "
             "found. A violation is a point where an attack found a shorter one than the bound.\n",
             md_table(["precision", "mean bound", "mean bound / pixel", "mean attack minimum", "attack success",
                       "violations", "artifact sha256"], rows), f"\n{note}."]
    return lines
