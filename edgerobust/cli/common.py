"""What every command shares: one-line errors, the console, option parsing helpers."""
from __future__ import annotations

import errno
import functools
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..config import section
from ..errors import EdgeRobustError
from ..recipe import load_recipe

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def debug_enabled() -> bool:
    return os.environ.get("EDGEROBUST_DEBUG", "0") not in ("", "0")


def command(func: F) -> F:
    """The command's error boundary: every expected failure (bad input, an unwritable or full disk, a model too
    large for memory) becomes one red line and exit code 2; tracebacks only with --debug. Warnings raised by a
    command that then fails are dropped (the one line says what went wrong); a successful command shows them."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                result = func(*args, **kwargs)
            except EdgeRobustError as exc:
                _fail(exc, str(exc))
            except MemoryError as exc:
                _fail(exc, "out of memory: the model or input is too large for this machine; choose a smaller one")
            except OSError as exc:
                if exc.errno not in _USER_OS_ERRORS:
                    raise
                where = f" {exc.filename}" if exc.filename else ""
                _fail(exc, f"cannot write{where}: {exc.strerror}; choose another output path or free some space")
            except KeyboardInterrupt:
                err_console.print("[bold red]interrupted[/] (nothing half-written; `--resume` continues training)")
                raise typer.Exit(130) from None
        for warning in caught:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        return result

    return wrapper  # type: ignore[return-value]


_USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG}


def _fail(exc: BaseException, message: str) -> None:
    if debug_enabled():
        raise exc
    line = " ".join(message.split())  # one line, whatever the message held
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None
RECIPE_HELP = "Built-in recipe name or .toml path: its {section} section; options given here override it."


def recipe_section(recipe: str | None, name: str, overrides: dict[str, Any]) -> Any:
    """Section `name` of the recipe named by --recipe (none: the section's defaults) with the command-line values
    that were given (None: not given) on top, through the one config layer."""
    return section(load_recipe(recipe) if recipe else {}, name, overrides=overrides)


def recipe_model(spec: dict, model: str | None, kwargs: str | None, mean: str | None,
                 std: str | None) -> tuple[Any, dict[str, Any]]:
    """The recipe's [model] section with --mean/--std/--kwargs on top, and the options `model` is built with: the
    section's own when `model` is the recipe's (or --kwargs was given), else only its normalisation (the recipe's
    kwargs are its own model's)."""
    model_config = section(spec, "model", overrides=dict(mean=split_list(mean), std=split_list(std),
                                                         kwargs=parse_kwargs(kwargs)))
    options = model_config.options() if model in (None, model_config.spec) or kwargs is not None else \
        {"mean": model_config.mean, "std": model_config.std}
    return model_config, options


def device_option():
    """The `--device` option of every command that computes (resolved by compute_device.resolve_device)."""
    return typer.Option("auto", "--device", help="Where to compute: auto (CUDA when present), cpu, cuda or cuda:N.")


def split_list(text: str | None) -> list[str] | None:
    """A comma-separated option ("0.5,25%") as its parts; None when the option was not given."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_kwargs(text: str | None, option: str = "--kwargs") -> dict | None:
    """A JSON object of keyword arguments ('{"width": 16}'); None when the option was not given."""
    if text is None:
        return None
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgeRobustError(f"{option} {text!r} is not JSON ({exc.msg}); write e.g. '{{\"width\": 16}}'") from None
    if not isinstance(value, dict):
        raise EdgeRobustError(f"{option} {text!r} must be a JSON object of name: value, e.g. '{{\"width\": 16}}'")
    return value


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise EdgeRobustError(f"shape '{text}' must look like 3,32,32 or 3x32x32") from None
    if len(shape) != 3 or min(shape) < 1:
        raise EdgeRobustError(f"shape '{text}' must be C,H,W with positive sizes")
    return shape
