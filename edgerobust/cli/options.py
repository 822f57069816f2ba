"""Options several commands take, declared once: each command names them (`data_root: Optional[Path] = DATA_ROOT`).

A constant is an option whose flags, help and default are the same wherever it appears; a function builds one whose
default or help a command sets (`--out`, `--recipe`, `--quiet`). `--device` is cli/common.device_option.
"""
from __future__ import annotations

from pathlib import Path

import typer

RECIPE_FILE_HELP = "Built-in recipe name or .toml path."

# the model a command builds or imports: its factory's kwargs and its input normalisation ([model] section)
KWARGS = typer.Option(None, "--kwargs", help="Keyword arguments of your model's factory as JSON, e.g. "
                      "'{\"width\": 16}' (replaces the recipe's [model] kwargs).")
MEAN = typer.Option(None, "--mean", help="Your model takes inputs normalised with this per-channel mean, e.g. "
                    "0.485,0.456,0.406 (default: [0,1] pixels).")
STD = typer.Option(None, "--std", help="… and this per-channel std.")

# training ([train] section)
EPOCHS = typer.Option(None, help="Epochs (overrides the recipe).")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Batch size.")
LR = typer.Option(None, help="Peak learning rate.")
OPTIMIZER = typer.Option(None, help="sgd or adam.")
DATA_ROOT = typer.Option(None, "--data-root", help="Directory holding on-disk datasets.")


def out_option(default: str, help: str = "Run directory to write."):
    """`--out/-o`: the directory a command writes."""
    return typer.Option(Path(default), "--out", "-o", help=help)


def recipe_option(default: str | None = None, help: str = RECIPE_FILE_HELP):
    """`--recipe/-r`: a built-in recipe's name or a .toml path (cli/common.RECIPE_HELP names the section read)."""
    return typer.Option(default, "--recipe", "-r", help=help)


def quiet_option(help: str = "No progress bar."):
    """`--quiet/-q`: no progress output."""
    return typer.Option(False, "--quiet", "-q", help=help)
