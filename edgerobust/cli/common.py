"""What every command shares: one-line errors, the console, option parsing helpers."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from fractions import Fraction
from typing import TypeVar

import typer
from rich.console import Console

from ..errors import EdgeRobustError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable)


def debug_enabled() -> bool:
    return os.environ.get("EDGEROBUST_DEBUG", "0") not in ("", "0")


def command(func: F) -> F:
    """Turn EdgeRobustError (bad input) into one red line and exit code 2; tracebacks only with --debug."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EdgeRobustError as exc:
            if debug_enabled():
                raise
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/] (nothing half-written; `--resume` continues training)")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def device_option():
    """The `--device` option of every command that computes (resolved by compute_device.resolve_device)."""
    return typer.Option("auto", "--device", help="Where to compute: auto (CUDA when present), cpu, cuda or cuda:N.")


def parse_fraction(text: str, name: str = "value") -> float:
    """Accept 0.03, 8/255 or 3%."""
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise EdgeRobustError(f"{name} '{text}' is not a number (use e.g. 0.03 or 8/255)") from None


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise EdgeRobustError(f"shape '{text}' must look like 3,32,32 or 3x32x32") from None
    if len(shape) != 3 or min(shape) < 1:
        raise EdgeRobustError(f"shape '{text}' must be C,H,W with positive sizes")
    return shape
