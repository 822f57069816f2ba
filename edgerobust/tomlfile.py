"""Reading TOML (recipes, device profiles): the standard library's `tomllib` from Python 3.11, the `tomli` backport
(the same parser, a dependency only below 3.11) on Python 3.10 — Ubuntu 22.04's Python, where many Jetson hosts live.

The one place edgerobust imports a TOML parser; everything else uses `loads` and `TOMLDecodeError` from here.
"""
from __future__ import annotations

try:
    import tomllib as _toml
except ImportError:  # Python 3.10
    try:
        import tomli as _toml
    except ImportError:
        raise ImportError("edgerobust reads TOML with tomli on Python 3.10; pip install tomli") from None

loads = _toml.loads
TOMLDecodeError = _toml.TOMLDecodeError
PARSER = _toml.__name__

__all__ = ["PARSER", "TOMLDecodeError", "loads"]
