"""`edgerobust pipeline`."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import EdgeRobustError
from ..pipeline import PipelineContext, run_steps
from ..recipe import load_recipe
from .common import command, console, err_console
from .render import table


@command
def pipeline(
    out: Path = typer.Option(Path("runs/pipeline"), "--out", "-o", help="Directory for every artifact."),
    recipe: str = typer.Option("pipeline", "--recipe", "-r", help="Built-in recipe name or .toml path."),
    steps: str = typer.Option("", "--steps", help="Comma-separated steps to run instead of the recipe's."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole chain (train, compress, evaluate, export, bench, report) on the built-in default."""
    spec = load_recipe(recipe)
    names = [s.strip() for s in steps.split(",") if s.strip()] or list(spec.get("pipeline", {}).get("steps", []))
    if not names:
        raise EdgeRobustError(f"recipe {spec['origin']} lists no [pipeline] steps")
    if "train" not in names and not (out / "model" / "model.json").is_file():
        raise EdgeRobustError(f"no trained model in {out / 'model'}; include the 'train' step")
    ctx = PipelineContext(out=out, recipe=spec, progress=False if quiet else None)
    if "train" not in names:
        from ..run import RunDir
        ctx.run = ctx.runs["train"] = RunDir.open(out / "model")
    run_steps(ctx, names, on_step=lambda name: err_console.print(f"[bold cyan]▶ {name}[/]"))
    rows = [(step, what, value) for step, what, value in ctx.summary if what != "report"]
    console.print(table("pipeline summary", ("step", "what", "value"), rows))
    report = next((value for _, what, value in ctx.summary if what == "report"), None)
    if report:
        console.print(f"report: [bold]{report}[/]")
