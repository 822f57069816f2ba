"""The evaluate step: the standard suite, a robustness curve, minimal perturbations and masking checks."""
from __future__ import annotations

from ..errors import EdgeRobustError
from ..evaluation.api import evaluate_run
from .context import PIPELINE_STEPS, PipelineContext

EVALUATE_KEYS = {"suite", "eps", "norm", "attacks", "curve", "curve_grid", "curve_steps", "n", "seed", "steps",
                 "n_restarts", "square_queries", "n_target_classes", "minimal", "masking_checks", "masking_steps",
                 "batch_size", "fab"}


@PIPELINE_STEPS.register("evaluate", "attack the current model: cumulative suite, curve, masking checks")
def evaluate_step(ctx: PipelineContext) -> None:
    settings = ctx.settings("evaluate")
    unknown = set(settings) - EVALUATE_KEYS
    if unknown:
        raise EdgeRobustError(f"unknown [evaluate] settings: {', '.join(sorted(unknown))}; valid: "
                              f"{', '.join(sorted(EVALUATE_KEYS))}")
    result = evaluate_run(ctx.run, progress=ctx.progress, device=ctx.device, **settings)
    ctx.runs["evaluate"] = ctx.run
    if "suite" in result:
        ctx.add("evaluate", f"robust accuracy ε={result['eps']:.3g} (upper bound)", result["robust_accuracy"])
    if "curve" in result:
        below = [eps for eps, acc in result["curve"]["points"] if acc < result["curve"]["chance"]]
        ctx.add("evaluate", "ε where accuracy < chance", below[0] if below else "not reached")
    if "masking" in result:
        failed = [c["check"] for c in result["masking"] if c["status"] == "FAIL"]
        ctx.add("evaluate", "gradient-masking checks", "FAILED: " + "; ".join(failed) if failed else "pass")
