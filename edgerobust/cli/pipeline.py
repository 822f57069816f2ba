"""`edgerobust pipeline`."""
from __future__ import annotations

import shutil
from pathlib import Path

import typer

from ..errors import EdgeRobustError
from ..io import write_json
from ..pipeline import PipelineContext, run_steps
from ..recipe import load_recipe
from ..run import RunDir, now
from .common import command, console, device_option, err_console
from .render import table

PIPELINE_MARKER = "pipeline.json"


def prepare_output(out: Path) -> None:
    """A re-run replaces an earlier pipeline's directory, but never a directory the pipeline did not make."""
    if not out.exists():
        return
    if not out.is_dir():
        raise EdgeRobustError(f"{out} exists and is not a directory; choose another --out")
    contents = list(out.iterdir())
    if not contents:
        return
    if not (out / PIPELINE_MARKER).is_file() and not (out / "model" / "model.json").is_file():
        raise EdgeRobustError(f"{out} is not empty and was not written by `edgerobust pipeline`; "
                              "choose another --out")
    shutil.rmtree(out)


@command
def pipeline(
    out: Path = typer.Option(Path("runs/pipeline"), "--out", "-o", help="Directory for every artifact."),
    recipe: str = typer.Option("pipeline", "--recipe", "-r", help="Built-in recipe name or .toml path."),
    steps: str = typer.Option("", "--steps", help="Comma-separated steps to run instead of the recipe's."),
    device: str = device_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole chain (train, compress, evaluate, export, bench, report) on the built-in default."""
    spec = load_recipe(recipe)
    names = [s.strip() for s in steps.split(",") if s.strip()] or list(spec.get("pipeline", {}).get("steps", []))
    if not names:
        raise EdgeRobustError(f"recipe {spec['origin']} lists no [pipeline] steps")
    if "train" not in names and not (out / "model" / "model.json").is_file():
        raise EdgeRobustError(f"no trained model in {out / 'model'}; include the 'train' step")
    if "train" in names:
        prepare_output(out)
    ctx = PipelineContext(out=out, recipe=spec, progress=False if quiet else None, device=device)
    if "train" not in names:
        ctx.run = ctx.runs["train"] = RunDir.open(out / "model")
    run_steps(ctx, names, on_step=lambda name: err_console.print(f"[bold cyan]▶ {name}[/]"))
    write_json(out / PIPELINE_MARKER, {"recipe": spec.get("origin"), "steps": names, "finished": now(),
                                       "summary": [list(row) for row in ctx.summary]})
    rows = [(step, what, value) for step, what, value in ctx.summary if what != "report"]
    console.print(table("pipeline summary", ("step", "what", "value"), rows))
    report = next((value for _, what, value in ctx.summary if what == "report"), None)
    if report:
        console.print(f"report: [bold]{report}[/]")
