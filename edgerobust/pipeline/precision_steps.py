"""The precisions step: each exported artifact (fp32, int8) with its speed, clean accuracy and robustness by its own
onnxruntime outputs, side by side in the pipeline's summary (evaluation/artifact.py)."""
from __future__ import annotations

from ..config import section
from ..errors import EdgeRobustError
from .context import PIPELINE_STEPS, PipelineContext


@PIPELINE_STEPS.register("precisions", "robustness of each exported artifact (fp32, int8) by its own onnxruntime "
                                       "outputs: saved sets replayed, Square, APGD-CE through its surrogate "
                                       "(RUN/precision_robustness.json)")
def precisions_step(ctx: PipelineContext) -> None:
    from ..devices import load_profile
    from ..evaluation.artifact import evaluate_artifacts

    target = load_profile(section(ctx.recipe, "export").target).name
    bundle = ctx.run.bundle(target)
    if bundle is None:
        raise EdgeRobustError(f"the precisions step needs the export step's bundle for {target}; put export before it")
    result = evaluate_artifacts(ctx.run, section(ctx.recipe, "evaluate"), bundle=bundle)
    bench = {(r["precision"], r["batch"]): r["p50_ms"] for r in _bench_rows(ctx)}
    batch = max((b for _, b in bench), default=None)
    for precision, row in result["precisions"].items():  # speed, accuracy and robustness of each precision
        if (precision, batch) in bench:
            ctx.add("precisions", f"{precision} p50 ms (batch {batch})", round(bench[(precision, batch)], 4))
        ctx.add("precisions", f"{precision} clean accuracy", row["clean_accuracy"])
        ctx.add("precisions", f"{precision} robust accuracy (min over {len(result['sources'])} sources)",
                row["robust_accuracy"])
        if row.get("divergence"):
            ctx.add("precisions", f"{precision} points differing from fp32 (clean / attacked)",
                    f"{row['divergence']['clean']} / "
                    f"{sum(v for k, v in row['divergence'].items() if k != 'clean')}")


def _bench_rows(ctx: PipelineContext) -> list[dict]:
    """The first runtime's rows of the run's bench.json (the bench step's), if any."""
    from ..io import read_json

    path = ctx.run.file("bench.json")
    rows = read_json(path).get("results", []) if path.is_file() else []
    first = rows[0]["runtime"] if rows else None
    return [r for r in rows if r["runtime"] == first and "precision" in r]
