"""`edgerobust pipeline`."""
from __future__ import annotations

from pathlib import Path

import typer

from ..claim import check_output, locked
from ..config import section
from ..errors import EdgeRobustError
from ..io import write_json
from ..pipeline import PipelineContext, run_steps
from ..pipeline.context import check_steps
from ..pipeline.directory import Claim, check_claimable, read_marker
from ..recipe import load_recipe
from ..run import RunDir, now
from . import options as opts
from .common import command, console, device_option, err_console
from .render import table

PIPELINE_MARKER = "pipeline.json"


@command
def pipeline(
    out: Path = opts.out_option("runs/pipeline", help="Directory for every artifact."),
    recipe: str = opts.recipe_option("pipeline"),
    steps: str = typer.Option("", "--steps", help="Comma-separated steps to run instead of the recipe's."),
    device: str = device_option(),
    quiet: bool = opts.quiet_option("No progress bars or step lines."),
) -> None:
    """Run the whole chain (train, compress, evaluate, export, bench, report) on the built-in default."""
    check_output(out)
    spec = load_recipe(recipe)
    names = [s.strip() for s in steps.split(",") if s.strip()] or section(spec, "pipeline").steps
    if not names:
        raise EdgeRobustError(f"recipe {spec['origin']} lists no [pipeline] steps")
    ctx = PipelineContext(out=out, recipe=spec, progress=False if quiet else None)
    check_steps(ctx, names)  # unknown steps and settings a step cannot run with fail before anything is touched
    if "train" not in names and not (out / "model" / "model.json").is_file():
        raise EdgeRobustError(f"no trained model in {out / 'model'}; include the 'train' step")
    claimed = "train" in names or read_marker(out) is not None
    if claimed:
        check_claimable(out)
    with locked(out):
        claim = Claim(out) if claimed else None
        if claim and "train" in names:
            claim.clean()  # only what an earlier pipeline made here
        if "train" not in names:
            ctx.run = ctx.runs["train"] = RunDir.open(out / "model")
        try:
            run_steps(ctx, names, on_step=None if quiet else lambda name: err_console.print(f"[bold cyan]▶ {name}[/]"))
            write_json(out / PIPELINE_MARKER, {"recipe": spec.get("origin"), "steps": names, "finished": now(),
                                               "summary": [list(row) for row in ctx.summary]})
        finally:
            if claim:
                claim.record()
    rows = [(step, what, value) for step, what, value in ctx.summary if what != "report"]
    console.print(table("pipeline summary", ("step", "what", "value"), rows))
    report = next((value for _, what, value in ctx.summary if what == "report"), None)
    if report:
        console.print(f"report: [bold]{report}[/]")
