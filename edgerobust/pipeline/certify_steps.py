"""The pipeline's certify step: certificates for every artifact of the current model's bundle (after `export`).

Small by design (the default pipeline stays about a minute on 2 cores): the bundle's first 32 golden inputs, CROWN
at the [evaluate] ε and at a fifth of it (an adversarially trained network is rarely certifiable at the ε it was
attacked at), and each point's certified L∞/L2 radius by bisection; `edgerobust certify` does the full job.
"""
from __future__ import annotations

from ..certify.api import certify_bundle
from ..config import section
from ..devices import load_profile
from .context import PIPELINE_STEPS, PipelineContext

POINTS = 32


@PIPELINE_STEPS.register("certify", "certify the exported artifacts (CROWN, per arithmetic model) on a few points")
def certify_step(ctx: PipelineContext) -> None:
    profile = load_profile(section(ctx.recipe, "export").target)
    bundle = ctx.out / f"export-{profile.name}"
    evaluate = section(ctx.recipe, "evaluate")
    norm = "2" if str(evaluate.norm).lower() in ("l2", "2") else "inf"
    eps = float(evaluate.eps)
    result = certify_bundle(bundle, [eps / 5, eps], method="crown", norm=norm, n=POINTS, radius=True, run=ctx.run)
    for artifact in result["artifacts"]:
        for row in artifact["rows"]:
            value = "vacuous" if row["vacuous"] else row["certified_accuracy"]
            ctx.add("certify", f"{artifact['precision']} {row['arithmetic']} certified acc. @ε={row['eps']:g}", value)
        for arithmetic, radius in (artifact.get("radius") or {}).items():
            ctx.add("certify", f"{artifact['precision']} {arithmetic} mean certified radius", round(radius["mean"], 4))
