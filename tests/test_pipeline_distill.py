"""The pipeline's distill step: a student run from the current model, exported like it, in OUT/student."""
from __future__ import annotations

import json

from tests.cli_helpers import run_cli

RECIPE = """
[pipeline]
steps = ["train", "distill", "export"]
[model]
spec = "scnn2:8-16"
[data]
name = "digits"
[train]
epochs = 2
augment = false
[distill]
student = "mlp:8"
method = "temperature"
temperature = 2.0
eval_n = 50
[export]
target = "x86-cpu"
"""


def test_distill_step_makes_an_exported_student_run(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    code, out, err = run_cli("pipeline", "--recipe", recipe, "--out", tmp_path / "p", "-q")
    assert code == 0, err
    student = json.loads((tmp_path / "p" / "student" / "model" / "model.json").read_text())
    assert student["distillation"]["teacher"]["path"].endswith("model")
    assert student["distillation"]["settings"]["temperature"] == 2.0
    assert (tmp_path / "p" / "student" / "export-x86-cpu").is_dir() and (tmp_path / "p" / "export-x86-cpu").is_dir()
    assert "student export: target" in out or "student export" in json.dumps(
        json.loads((tmp_path / "p" / "pipeline.json").read_text()))
