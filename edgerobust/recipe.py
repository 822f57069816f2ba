"""Recipe files (TOML): whole configurations by name (built in) or path."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from . import tomlfile
from .errors import EdgeRobustError


def builtin_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("edgerobust.recipes").iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise EdgeRobustError(f"recipe file {path} does not exist")
        text, origin = path.read_text(), str(path)
    else:
        resource = resources.files("edgerobust.recipes") / f"{name_or_path}.toml"
        if not resource.is_file():
            raise EdgeRobustError(f"unknown recipe '{name_or_path}'; built-in recipes: {', '.join(builtin_recipes())}"
                                  " (or pass a path to a .toml file)")
        text, origin = resource.read_text(), f"builtin:{name_or_path}"
    try:
        recipe = tomlfile.loads(text)
    except tomlfile.TOMLDecodeError as exc:
        raise EdgeRobustError(f"recipe {origin} is not valid TOML: {exc}") from None
    recipe.setdefault("origin", origin)
    return recipe


def section(recipe: dict[str, Any], name: str, allowed: set[str] | None = None) -> dict[str, Any]:
    """One [section] of a recipe; unknown keys are an error naming the valid ones."""
    value = recipe.get(name, {})
    if not isinstance(value, dict):
        raise EdgeRobustError(f"recipe {recipe.get('origin')}: [{name}] must be a table")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise EdgeRobustError(f"recipe {recipe.get('origin')}: unknown key(s) {', '.join(unknown)} in [{name}]; "
                                  f"valid keys: {', '.join(sorted(allowed))}")
    return dict(value)
