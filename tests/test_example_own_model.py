"""examples/own-model: `edgerobust pipeline --recipe recipe.toml` on an import-path model and an image folder, as the
README shows it (run from the example's directory), with the recipe's epochs and attack budgets cut to test size."""
from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

from edgerobust.recipe import load_recipe

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own-model"
SMALLER = {"epochs = 12": "epochs = 2", "admm_epochs = 4": "admm_epochs = 1",
           "retrain_epochs = 3": "retrain_epochs = 1", "steps = 20": "steps = 3",
           "square_queries = 100": "square_queries = 10", "repeats = 20": "repeats = 3", "n = 30": "n = 6"}


@pytest.mark.slow  # ~30 s of CPU: seven pipeline steps, the report's plots included
def test_the_example_pipeline_runs_on_your_model_and_images(tmp_path, monkeypatch):
    work = shutil.copytree(EXAMPLE, tmp_path / "own-model")
    recipe = (work / "recipe.toml").read_text()
    for old, new in SMALLER.items():
        assert old in recipe, old  # the example still says what this test shrinks
        recipe = recipe.replace(old, new)
    (work / "recipe.toml").write_text(recipe)
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    importlib.import_module("make_images").write_folder(Path("images"), per_class=8)
    try:
        code, out, err = run_cli("pipeline", "--recipe", "recipe.toml", "--out", "runs/own", "-q")
    finally:
        for name in ("dronenet", "make_images"):
            sys.modules.pop(name, None)
    assert code == 0, err
    trained = json.loads((work / "runs/own/model/model.json").read_text())
    assert trained["model"]["source"]["import"] == "dronenet:dronenet"
    assert trained["model"]["source"]["kwargs"] == {"width": 12}
    assert trained["dataset"]["train"]["classes"] == ["disc", "square", "stripes"]
    assert trained["dataset"]["options"]["shape"] == [3, 32, 32]
    slim = json.loads((work / "runs/own/compressed/model.json").read_text())
    assert slim["compression"]["removed_channels"] and slim["model"]["physically_pruned"]
    assert {"robustness", "export", "bench"} <= set(slim)
    assert (work / "runs/own/compressed/report.md").is_file()
    assert re.search(r"\bexport\b.*x86-cpu", out)


def test_the_example_recipe_is_valid_as_shipped():
    recipe = load_recipe(str(EXAMPLE / "recipe.toml"))
    assert recipe["model"]["spec"] == "dronenet:dronenet" and recipe["data"]["name"] == "imagefolder"
