"""The Typer application: one module per command (group), registered here."""
from __future__ import annotations

import os

import typer

from . import bench as bench_cmd
from . import certify as certify_cmd
from . import compress as compress_cmd
from . import devices as devices_cmd
from . import distill as distill_cmd
from . import evaluate as evaluate_cmd
from . import export as export_cmd
from . import imports as imports_cmd
from . import models as models_cmd
from . import pipeline as pipeline_cmd
from . import report as report_cmd
from . import smooth as smooth_cmd
from . import train as train_cmd

app = typer.Typer(name="edgerobust", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # help names recipe sections like [bench]: text, never markup
                  context_settings={"max_content_width": 120},
                  help="Make image classifiers robust and small, export them for a device, and measure them there.")


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main_options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
                 version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    if debug:
        os.environ["EDGEROBUST_DEBUG"] = "1"


app.command()(pipeline_cmd.pipeline)
app.command()(train_cmd.train)
app.command()(compress_cmd.compress)
app.command()(distill_cmd.distill)
app.command()(evaluate_cmd.evaluate)
app.command()(report_cmd.report)
app.command()(bench_cmd.bench)
app.command()(smooth_cmd.smooth)
app.command()(models_cmd.models)
app.command()(models_cmd.datasets)
app.command()(models_cmd.losses)
app.command()(export_cmd.export)
app.command()(export_cmd.verify)
app.command(name="import")(imports_cmd.import_)
app.command()(certify_cmd.certify)
app.add_typer(devices_cmd.devices_app)


def main() -> None:
    """The CLI; under torchrun the process leaves its process group before exiting (training/distributed.leave)."""
    from ..training import distributed

    code: int | str | None = 1
    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code
        raise
    finally:
        distributed.leave(clean=code in (0, None))
