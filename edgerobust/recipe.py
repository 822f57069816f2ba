"""Recipe files (TOML): whole configurations by name (built in) or path, checked by the config layer on load."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from . import tomlfile
from .config import check_recipe
from .errors import EdgeRobustError


def builtin_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("edgerobust.recipes").iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise EdgeRobustError(f"recipe file {path} does not exist")
        text, origin = _read(path), str(path)
    else:
        resource = resources.files("edgerobust.recipes") / f"{name_or_path}.toml"
        if not resource.is_file():
            raise EdgeRobustError(f"unknown recipe '{name_or_path}'; built-in recipes: {', '.join(builtin_recipes())}"
                                  " (or pass a path to a .toml file)")
        text, origin = resource.read_text(encoding="utf-8"), f"builtin:{name_or_path}"
    try:
        recipe = tomlfile.loads(text)
    except tomlfile.TOMLDecodeError as exc:
        raise EdgeRobustError(f"recipe {origin} is not valid TOML: {exc}") from None
    recipe["origin"] = origin
    check_recipe(recipe)
    return recipe


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EdgeRobustError(f"recipe {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise EdgeRobustError(f"cannot read recipe {path}: {exc.strerror}") from None
