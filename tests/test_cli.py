"""The CLI: conventional commands, one-line errors with non-zero exits, nothing half-written."""
from __future__ import annotations

import json

from cli_helpers import run_cli


def test_help_and_version():
    code, out, _ = run_cli("--help")
    assert code == 0 and "pipeline" in out and "train" in out
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip()


def test_help_shows_recipe_sections_as_written():
    """Help text is text: `[bench]` and `[device]` name recipe sections and are never eaten as console markup."""
    for command, sections in (("bench", ("[bench]", "[device]")), ("smooth", ("[smooth]", "[device]")),
                              ("evaluate", ("[evaluate]",))):
        code, out, _ = run_cli(command, "--help")
        flat = " ".join(out.split())
        assert code == 0 and all(s in flat for s in sections), (command, out)


def test_models_lists_params_and_flops():
    code, out, _ = run_cli("models", "--shape", "1,8,8")
    assert code == 0 and "scnn2" in out and "resnet20" in out


def test_unknown_model_is_one_line(tmp_path):
    code, out, err = run_cli("train", "--model", "nosuch", "--data", "digits", "--out", tmp_path / "r", "-q")
    assert code == 2
    assert "unknown model 'nosuch'" in err and "scnn2" in err and "Traceback" not in err + out
    assert not (tmp_path / "r" / "model.pt").exists()


def test_unknown_dataset_and_missing_files(tmp_path):
    code, _, err = run_cli("train", "--data", "nosuch", "--out", tmp_path / "r", "-q")
    assert code == 2 and "valid datasets" in err
    code, _, err = run_cli("train", "--data", "cifar10", "--data-root", tmp_path / "nothing", "--out",
                           tmp_path / "r2", "-q")
    assert code == 2 and "missing" in err and "data_batch_1" in err
    assert len(err.strip().splitlines()) == 1


def test_model_that_cannot_take_the_input(tmp_path):
    code, _, err = run_cli("train", "--model", "cifar-teacher", "--data", "digits", "--out", tmp_path / "r", "-q")
    assert code == 2 and "cannot take inputs of shape (1, 8, 8)" in err


def test_report_on_something_that_is_not_a_run(tmp_path):
    code, _, err = run_cli("report", tmp_path)
    assert code == 2 and "not an edgerobust run directory" in err


def test_corrupt_checkpoint_through_the_cli(digits_run, tmp_path):
    import shutil

    code, _, err = run_cli("pipeline", "--out", tmp_path / "nope", "--steps", "clean-eval")
    assert code == 2 and "include the 'train' step" in err
    broken = tmp_path / "pipe" / "model"
    shutil.copytree(digits_run.path, broken)
    (broken / "model.pt").write_bytes((broken / "model.pt").read_bytes()[:100])
    code, out, err = run_cli("pipeline", "--out", tmp_path / "pipe", "--steps", "clean-eval", "-q")
    assert code == 2 and "corrupt or truncated" in err and "Traceback" not in out + err


def test_train_then_report(tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", "--model", "mlp:32", "--data", "digits", "--epochs", "2", "--out", out, "-q")
    assert code == 0, err
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["model"]["spec"] == "mlp:32" and len(manifest["training"]["history"]) == 2
    code, stdout, _ = run_cli("report", out)
    assert code == 0
    report = (out / "report.md").read_text()
    assert "## Model and training" in report and (out / "figures" / "training_curves.png").stat().st_size > 1000


def test_recipe_with_unknown_key(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[train]\nepochz = 3\n")
    code, _, err = run_cli("train", "--recipe", recipe, "--out", tmp_path / "r", "-q")
    assert code == 2 and "unknown key(s) epochz" in err


def test_pipeline_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    code, _, err = run_cli("pipeline", "--out", tmp_path, "-q")
    assert code == 2 and "not written by `edgerobust pipeline`" in err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
