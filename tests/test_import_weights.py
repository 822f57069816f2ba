"""Your weights (issue 26): `edgerobust import --model SPEC --weights FILE` makes a run every command takes."""
from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli
from safetensors.torch import save_file
from user_data import image_folder

from edgerobust.errors import CheckpointError
from edgerobust.imports import ImportSetup, import_weights
from edgerobust.run import RunDir
from edgerobust.training.metrics import evaluate_clean


@pytest.fixture()
def trained_elsewhere(package):
    from dronenets.nets import drone

    torch.manual_seed(3)
    return drone(3, width=5).eval()


def saved(tmp_path, kind: str, module: torch.nn.Module):
    state = module.state_dict()
    if kind == "safetensors":
        save_file(state, tmp_path / "w.safetensors")
        return tmp_path / "w.safetensors"
    if kind == "nested-dataparallel":
        state = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, tmp_path / "w.pt")
    return tmp_path / "w.pt"


@pytest.mark.parametrize("kind", ["pt", "safetensors", "nested-dataparallel"])
def test_imported_weights_give_the_original_logits_and_accuracy(trained_elsewhere, tmp_path, kind):
    folder = image_folder(tmp_path / "f", per_class=10, size=(10, 10))
    run = import_weights(tmp_path / "r", "dronenets.nets:drone", saved(tmp_path, kind, trained_elsewhere),
                         ImportSetup(data="imagefolder", data_root=folder, model_options={"kwargs": {"width": 5}}))
    model = RunDir.open(run.path).load_model()
    x = torch.rand(4, 3, 10, 10)
    assert torch.equal(model(x), trained_elsewhere(x))  # identity normalisation, the same weights
    test = run.manifest["dataset"]["test"]
    assert test["classes"] == ["cat", "dog", "owl"] and test["size"] == 6
    from edgerobust.data import load_dataset

    expected = evaluate_clean(trained_elsewhere, load_dataset("imagefolder", "test", folder))["accuracy"]
    assert run.manifest["metrics"]["test_accuracy"] == expected
    imported = run.manifest["imported"]
    assert imported["format"] == ("safetensors" if kind == "safetensors" else "pt")
    assert ("nested_under" in imported) == (kind == "nested-dataparallel")


def test_a_zoo_run_state_dict_reimports_and_evaluates(digits_run, tmp_path):
    code, _, err = run_cli("import", "--model", "scnn2:8-16", "--weights", digits_run.weights_path, "--data",
                           "digits", "--out", tmp_path / "r")
    assert code == 0, err
    manifest = json.loads((tmp_path / "r" / "model.json").read_text())
    assert manifest["imported"]["keys"] == "edgerobust"
    assert manifest["metrics"]["test_accuracy"] == digits_run.manifest["metrics"]["test_accuracy"]
    assert manifest["model"]["mean"] == digits_run.manifest["model"]["mean"]  # the file's own normalisation kept
    code, _, err = run_cli("evaluate", tmp_path / "r", "--n", "8", "--steps", "3", "--queries", "10")
    assert code == 0, err


def test_without_data_the_shape_and_classes_are_given(trained_elsewhere, tmp_path):
    weights = saved(tmp_path, "pt", trained_elsewhere)
    code, _, err = run_cli("import", "--model", "dronenets.nets:drone", "--kwargs", '{"width": 5}', "--weights",
                           weights, "--shape", "3,10,10", "--classes", "3", "--out", tmp_path / "r")
    assert code == 0, err
    manifest = json.loads((tmp_path / "r" / "model.json").read_text())
    assert "dataset" not in manifest and "test_accuracy" not in manifest["metrics"]


def test_weights_that_do_not_fit_are_named(trained_elsewhere, tmp_path):
    state = trained_elsewhere.state_dict()
    state.pop("stem.0.bias")
    state["extra.weight"] = torch.zeros(2)
    state["head.2.weight"] = torch.zeros(3, 7)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        import_weights(tmp_path / "r", "dronenets.nets:drone", tmp_path / "bad.pt",
                       ImportSetup(input_shape=(3, 8, 8), num_classes=3, model_options={"kwargs": {"width": 5}}))
    assert str(info.value).endswith("missing: stem.0.bias; unexpected: extra.weight; shape mismatch: head.2.weight "
                                    "(3, 7) in the file vs (3, 10) in the model")
    assert not (tmp_path / "r").exists()
