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
    if record.get("peck_mode") == "thesis":  # no certificate: Peck's figures alone, labelled so
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
    if record.get("peck_mode"):
        lines += ["", *peck_lines(record, path)]
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


@register_section("certify-device", "device outputs inside certified balls, checked against the certificates")
def certify_device_section(run: RunDir, figures: Path) -> str | None:
    """Per device (the manifest's `device.<name>.certify_check`, RUN/device/<name>/certify_check.json): per
    precision, ε and arithmetic model the certified points, outputs checked and the violations of the margin bounds
    and of the per-logit intervals; a fleet's unchecked shards (RUN/device/fleet-certify_check.json) named."""
    rows, notes = [], []
    for name, entry in sorted(run.manifest.get("device", {}).items()):
        info = entry.get("certify_check") if isinstance(entry, dict) else None
        if not info:
            continue
        path = run.path / info.get("file", f"device/{name}/certify_check.json")
        try:
            doc = read_json(path)
            runtime = doc.get("settings", {}).get("runtime")
            machine = (((doc.get("device") or {}).get("info") or {}).get("machine") or {}).get("architecture")
            for r in doc["rows"]:
                arch = (r.get("record") or {}).get("architecture") or machine
                rows.append([name, arch, runtime, r["precision"], r["eps"], r["arithmetic"], r["certified_points"],
                             r["checked_outputs"], r.get("margin_violations", r["violations"]),
                             r.get("interval_violations") if r.get("logit_intervals") else "not in certificate",
                             ", ".join(map(str, r["violating_points"])) or "—"])
            if doc.get("error") or not doc.get("complete", True):
                notes.append(f"- {name}: the check did not finish ({(doc.get('error') or {}).get('message', 'stopped')}"
                             "); the rows above are those it completed.")
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise EdgeRobustError(f"{path} is not a certify check written by edgerobust ({exc!r}); run `edgerobust "
                                  f"certify {run.path} --host ...` again") from None
    fleet = run.path / "device" / "fleet-certify_check.json"
    if fleet.is_file():
        summary = read_json(fleet)
        for shard in summary.get("unchecked_shards", []):
            notes.append(f"- shard {shard[0]} of {shard[1]}: its device failed; its points are unchecked.")
    if not rows and not notes:
        return None
    bad = sum(r[8] + (r[9] if isinstance(r[9], int) else 0) for r in rows)
    lines = ["## Certificates checked on the device\n\nThe device's own outputs (the runner's `logits`) at random "
             "points inside every certified ball and at the attacks' points inside it, against the certificate: "
             "the margin lower bounds y_label − y_j and, where the certificate keeps them, each logit's interval "
             "(exact float64 comparison; a non-finite output counts). The real-number model bounds no artifact and "
             "is not checked.\n",
             md_table(["device", "architecture", "runtime", "precision", "ε", "arithmetic", "certified points",
                       "outputs checked", "margin violations", "logit-interval violations", "violating points"], rows),
             "\n" + ("No device output left its certified bounds." if bad == 0 else
                     f"**{bad} device outputs left their certified bounds: the certificate does not hold there.**")]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"
