"""Packaging that tells the truth: Python 3.10's TOML fallback, declared dependencies match the imports."""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from edgerobust import tomlfile
from edgerobust.errors import EdgeRobustError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgerobust"


def _fresh_tomlfile():
    """A second copy of edgerobust/tomlfile.py, imported under the current sys.modules."""
    spec = importlib.util.spec_from_file_location("tomlfile_copy", PACKAGE / "tomlfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_3_10_reads_recipes_and_profiles_with_tomli(monkeypatch):
    pytest.importorskip("tomli", reason="tomli is a dev dependency on every Python (pip install -e '.[dev]')")
    monkeypatch.setitem(sys.modules, "tomllib", None)  # what Python 3.10 has: `import tomllib` fails
    fallback = _fresh_tomlfile()
    assert fallback.PARSER == "tomli"
    monkeypatch.setattr("edgerobust.recipe.tomlfile", fallback)
    monkeypatch.setattr("edgerobust.devices.catalog.tomlfile", fallback)
    from edgerobust.devices import load_profile
    from edgerobust.recipe import load_recipe

    assert load_recipe("default") and load_profile("jetson-nano").name == "jetson-nano"
    assert fallback.loads('[adversarial]\neps = "8/255"\n') == {"adversarial": {"eps": "8/255"}}
    with pytest.raises(EdgeRobustError):
        load_recipe(ROOT / "pyproject.toml.missing")
    with pytest.raises(fallback.TOMLDecodeError):
        fallback.loads("[train\nepochs = 1")


def test_bad_toml_is_one_line_under_the_fallback(tmp_path, monkeypatch):
    pytest.importorskip("tomli")
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setattr("edgerobust.recipe.tomlfile", _fresh_tomlfile())
    from edgerobust.recipe import load_recipe

    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1\n")
    with pytest.raises(EdgeRobustError, match="bad.toml"):
        load_recipe(bad)


def test_without_either_parser_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ImportError, match="pip install tomli"):
        _fresh_tomlfile()


def test_the_standard_parser_is_used_where_it_exists():
    assert tomlfile.PARSER == ("tomllib" if sys.version_info >= (3, 11) else "tomli")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_one_module_imports_a_toml_parser():
    sites = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if _imports(p) & {"tomllib", "tomli"})
    assert sites == ["edgerobust/tomlfile.py"]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9_.-]+)", requirement).group(1)).lower()


def test_declared_dependencies_are_the_imported_ones():
    """Every third-party import is declared (a dependency or an extra), and every declared one is imported."""
    project = tomlfile.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    extras = {name: {_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    modules = set().union(*(_imports(p) for p in PACKAGE.rglob("*.py"))) - set(sys.stdlib_module_names)
    modules.discard("edgerobust")
    owners = importlib.metadata.packages_distributions()
    imported = {_name(owners.get(m, [m])[0]) for m in modules}
    runtime = declared | set().union(*(reqs for name, reqs in extras.items() if name != "dev"))
    assert imported - runtime == set(), "imported but not declared"
    assert runtime - imported == set(), "declared but imported nowhere"
    assert any(r.startswith("tomli") and 'python_version < "3.11"' in r for r in project["dependencies"])


def test_the_declared_license_has_its_file():
    project = tomlfile.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "LICENSE").read_text()
    assert project["license"]["text"] == "MIT" and text.startswith("MIT License")
    assert "the edgerobust authors" in text
