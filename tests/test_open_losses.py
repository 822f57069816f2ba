"""Open losses: a loss is one class and one registration, trainable by name from a recipe and the CLI; it receives
the [adversarial] settings it declares, may need no labels, and may hold modules that the trainer moves with the
model (the recipe of docs/architecture.md, "How to add a loss", proven here)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import run_cli
from torch import nn

from edgerobust.config import TrainConfig
from edgerobust.data import ArrayDataset, load_dataset
from edgerobust.errors import EdgeRobustError
from edgerobust.models import build_model
from edgerobust.training import LOSSES, LoopSetup, LossOutput, Trainer, build_training_loss
from edgerobust.training.losses import declared_settings, needs_labels

SYNTHETIC = {"shape": (1, 8, 8), "num_classes": 4, "size": 64}


@pytest.fixture
def losses(monkeypatch):
    """LOSSES as a copy for one test, so losses registered in it leave the registry as it was."""
    monkeypatch.setattr(LOSSES, "_items", dict(LOSSES._items))
    monkeypatch.setattr(LOSSES, "_help", dict(LOSSES._help))
    return LOSSES


@pytest.fixture
def scaled_ce(losses):
    @losses.register
    class ScaledCE:
        """cross-entropy times a scale (a test loss that declares ε and one option of its own)"""

        name = "scaled-ce"

        def __init__(self, eps: float = 0.0, scale: float = 1.0):
            self.eps, self.scale = eps, scale

        def __call__(self, model, x, y, state):
            logits = model(x)
            return LossOutput(self.scale * F.cross_entropy(logits, y), logits)

        def describe(self):
            return {"name": self.name, "eps": self.eps, "scale": self.scale}

    return ScaledCE


def test_a_registered_loss_is_built_by_name_with_the_settings_it_declares(scaled_ce):
    assert "scaled-ce" in LOSSES and LOSSES.help("scaled-ce").startswith("cross-entropy times a scale")
    loss = build_training_loss("scaled-ce", eps=0.1, steps=7, schedule="staged", scale=0.5)  # steps: not declared
    assert (loss.name, loss.eps, loss.scale) == ("scaled-ce", 0.1, 0.5)
    assert declared_settings(scaled_ce) == (["eps", "scale"], False)
    with pytest.raises(EdgeRobustError, match="loss 'scaled-ce' has no setting temperature; its settings: eps, scale"):
        build_training_loss("scaled-ce", temperature=4.0)


def test_a_registered_loss_trains_from_a_recipe_and_from_the_cli(scaled_ce, tmp_path):
    recipe = tmp_path / "loss.toml"
    recipe.write_text('[model]\nspec = "scnn2:8-16"\n[data]\nname = "synthetic"\noptions = { shape = [1, 8, 8], '
                      'num_classes = 4, size = 64 }\n[train]\nepochs = 1\nbatch_size = 32\nloss = "scaled-ce"\n'
                      'loss_options = { scale = 0.5 }\n[adversarial]\neps = 0.1\n')
    code, _, err = run_cli("train", "--recipe", recipe, "-q", "--out", tmp_path / "recipe")
    assert code == 0, err
    training = json.loads((tmp_path / "recipe" / "model.json").read_text())["training"]
    assert training["loss"] == {"name": "scaled-ce", "eps": 0.1, "scale": 0.5}  # ε from [adversarial]
    assert training["config"]["loss"] == "scaled-ce"
    # the option is the recipe key: --loss overrides [train] loss (here back to a built-in one)
    code, _, err = run_cli("train", "--recipe", recipe, "--loss", "natural", "-q", "--out", tmp_path / "natural")
    assert code == 2 and "loss 'natural' has no setting scale" in err
    recipe.write_text(recipe.read_text().replace('loss = "scaled-ce"\nloss_options = { scale = 0.5 }\n', ""))
    code, _, err = run_cli("train", "--recipe", recipe, "--loss", "scaled-ce", "-q", "--out", tmp_path / "cli")
    assert code == 0, err
    training = json.loads((tmp_path / "cli" / "model.json").read_text())["training"]
    assert training["loss"] == {"name": "scaled-ce", "eps": 0.1, "scale": 1.0}
    code, _, err = run_cli("train", "--recipe", recipe, "--loss", "nope", "-q", "--out", tmp_path / "bad")
    assert code == 2 and "--loss: unknown loss 'nope'" in err and "scaled-ce" in err


def test_the_losses_command_lists_the_registry(scaled_ce):
    code, out, _ = run_cli("losses")
    assert code == 0
    for name in LOSSES:
        assert name in out


class Distill:
    """KL(teacher ‖ student) at temperature 1: targets from a teacher the loss holds, no labels needed."""

    name = "test-distill"
    needs_labels = False

    def __init__(self, teacher: nn.Module):
        self.teacher = teacher.eval()
        self.moved_to: list[torch.device] = []

    def to(self, device):
        self.moved_to.append(torch.device(device))
        self.teacher.to(device)
        return self

    def __call__(self, model, x, y, state):
        assert y is None  # an unlabelled dataset gives no labels
        with torch.no_grad():
            target = F.softmax(self.teacher(x), 1)
        logits = model(x)
        return LossOutput(F.kl_div(F.log_softmax(logits, 1), target, reduction="batchmean"), logits)

    def describe(self):
        return {"name": self.name}


def kl_to_teacher(model, teacher, images):
    with torch.no_grad():
        return float(F.kl_div(F.log_softmax(model(images), 1), F.softmax(teacher(images), 1), reduction="batchmean"))


def test_a_label_free_loss_trains_on_unlabelled_data_and_its_teacher_moves_with_the_model():
    data = load_dataset("synthetic", "train", **SYNTHETIC)
    unlabelled = ArrayDataset(data.images, None, data.num_classes, "unlabelled", "train", data.mean, data.std)
    torch.manual_seed(1)
    teacher = build_model("scnn2:8-16", data.input_shape, data.num_classes)
    torch.manual_seed(2)
    student = build_model("scnn2:8-16", data.input_shape, data.num_classes)
    loss = Distill(teacher)
    assert not needs_labels(loss)
    before = kl_to_teacher(student, teacher, unlabelled.images)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05, optimizer="adam", augment=False)
    trainer = Trainer(student, unlabelled, config, LoopSetup(loss=loss), progress=False, device="cpu")
    assert loss.moved_to == [trainer.device]
    history = trainer.fit().history
    assert "train_accuracy" not in history[-1] and history[-1]["train_loss"] >= 0
    assert kl_to_teacher(student.eval(), teacher, unlabelled.images) < before
    # a loss that needs labels refuses unlabelled data with one line
    with pytest.raises(EdgeRobustError, match="the 'natural' loss needs labels and unlabelled has none"):
        Trainer(student, unlabelled, config, progress=False)
