"""Run the CLI in-process and return (exit code, stdout, stderr)."""
from __future__ import annotations

from typer.testing import CliRunner

from edgerobust.cli import app


def run_cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr
