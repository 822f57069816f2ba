"""The evaluate step: the standard suite, a robustness curve, minimal perturbations and masking checks."""
from __future__ import annotations

from dataclasses import replace

from ..config import section
from ..errors import EdgeRobustError
from ..evaluation.api import evaluate_run
from .context import PIPELINE_STEPS, PipelineContext


@PIPELINE_STEPS.register("evaluate", "attack the current model: cumulative suite, curve, masking checks")
def evaluate_step(ctx: PipelineContext) -> None:
    config = section(ctx.recipe, "evaluate")
    compress = ctx.recipe.get("compress", {})
    compress_n = section(ctx.recipe, "compress.evaluate").n if "evaluate" in compress else None
    if compress_n is not None:  # the suite runs on the points the compress step measured PGD on
        if config.n is None:
            config = replace(config, n=compress_n)
        elif config.n != compress_n:
            raise EdgeRobustError(f"[evaluate] n = {config.n} differs from [compress.evaluate] n = {compress_n}; "
                                  "the pipeline compares both on the same points, so set one n")
    result = evaluate_run(ctx.run, config, progress=ctx.progress, device=ctx.device)
    ctx.runs["evaluate"] = ctx.run
    if "suite" in result:
        ctx.add("evaluate", f"robust accuracy ε={result['eps']:.3g} (upper bound)", result["robust_accuracy"])
    if "curve" in result:
        below = [eps for eps, acc in result["curve"]["points"] if acc < result["curve"]["chance"]]
        ctx.add("evaluate", "ε where accuracy < chance", below[0] if below else "not reached")
    if "masking" in result:
        failed = [c["check"] for c in result["masking"] if c["status"] == "FAIL"]
        ctx.add("evaluate", "gradient-masking checks", "FAILED: " + "; ".join(failed) if failed else "pass")

