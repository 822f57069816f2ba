"""Training losses for randomized smoothing (Song's thesis, ch. 3): each trains, each term does what it says."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.errors import EdgeRobustError
from edgerobust.training import LOSSES, StepState, TrainConfig
from edgerobust.training.smoothing_losses import Consistency, inverse_normal_cdf, noisy_copies

STATE = StepState(epoch=0, step=0, progress=0.0, epochs=1)


@given(st.floats(0.02, 0.98))
@settings(max_examples=40, deadline=None)
def test_inverse_normal_cdf_gradient_is_the_correct_factor(g):
    """d/dg Φ⁻¹(g) = √(2π)·exp(Φ⁻¹(g)²/2): no σ² in it (the thesis's eq. 3.4 has one too many)."""
    t = torch.tensor(g, dtype=torch.float64, requires_grad=True)
    value = inverse_normal_cdf(t)
    value.backward()
    expected = math.sqrt(2 * math.pi) * math.exp(value.item() ** 2 / 2)
    assert t.grad.item() == pytest.approx(expected, rel=1e-9)


def test_threshold_makes_the_gradient_zero_not_infinite():
    t = torch.tensor([0.999999, 1.0], dtype=torch.float64, requires_grad=True)
    inverse_normal_cdf(t, 0.99).sum().backward()
    assert torch.isfinite(t.grad).all() and (t.grad == 0).all()


def test_noise_lives_on_the_input_device_and_has_sigma():
    torch.manual_seed(0)
    x = torch.zeros(50, 1, 8, 8, dtype=torch.float64)
    noisy = noisy_copies(x, 0.5, 4)
    assert noisy.shape == (200, 1, 8, 8) and noisy.dtype == x.dtype and noisy.device == x.device
    assert noisy.std().item() == pytest.approx(0.5, rel=0.05)  # 12,800 draws: std error ≈ 0.6%


def test_consistency_terms_vanish_for_identical_copies():
    """KL(F̂ ‖ F_i) = 0 when every copy predicts the same distribution; only η·H(F̂) is left."""
    logits = torch.randn(1, 5, 4, dtype=torch.float64).repeat(3, 1, 1)
    loss = Consistency(lam=7.0, eta=0.0).terms(logits, torch.zeros(5, dtype=torch.long))
    assert loss.abs().item() < 1e-12
    differing = Consistency(lam=7.0, eta=0.0).terms(torch.randn(3, 5, 4, dtype=torch.float64),
                                                    torch.zeros(5, dtype=torch.long))
    assert differing.item() > 0


@pytest.mark.parametrize("name,options", [("gaussian", {"m": 2}), ("consistency", {"m": 2}),
                                          ("gen-consistency", {"m": 2}), ("macer", {"m": 4})])
def test_each_loss_trains_through_the_one_loop(name, options, tmp_path):
    from edgerobust.training.api import TrainSetup, train_model

    torch.manual_seed(0)
    loss = LOSSES.get(name)(sigma=0.25, **options)
    run = train_model(tmp_path / name, "mlp:32", "digits", TrainConfig(epochs=2, batch_size=64, lr=0.05,
                                                                      augment=False), TrainSetup(loss=loss),
                      progress=False)
    assert run.manifest["training"]["loss"]["name"] == name
    assert run.manifest["training"]["loss"]["sigma"] == 0.25
    assert run.manifest["metrics"]["test_accuracy"] > 0.5


@pytest.mark.parametrize("name,bad", [("gaussian", {"sigma": 0}), ("consistency", {"m": 0}),
                                      ("consistency", {"lam": -1}), ("macer", {"threshold": 1.0}),
                                      ("macer", {"beta": -2})])
def test_bad_settings_are_refused(name, bad):
    with pytest.raises(EdgeRobustError):
        LOSSES.get(name)(**bad)


def test_losses_are_reachable_by_name():
    for name in ("gaussian", "consistency", "gen-consistency", "macer"):
        out = LOSSES.get(name)(m=2)(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
                                    torch.rand(6, 1, 8, 8), torch.arange(6), STATE)
        assert out.loss.ndim == 0 and out.logits.shape == (6, 10)
        out.loss.backward()


@pytest.mark.parametrize("name", ["gaussian", "consistency", "gen-consistency", "macer"])
def test_training_on_another_device_is_the_cpu_run(name):
    """Every tensor a smoothing loss makes lives on the input's device: the run on a (CPU-simulated) second device
    equals the CPU run bit for bit (tests/fake_device.py)."""
    from fake_device import OTHER, OnOtherDevice

    from edgerobust.data import load_dataset
    from edgerobust.models import build_model
    from edgerobust.training import LoopSetup, Trainer

    data = load_dataset("digits", "train").subset(64)

    def run(device):
        torch.manual_seed(0)
        model = build_model("scnn2:8-16", data.input_shape, data.num_classes, data.mean, data.std)
        trainer = Trainer(model, data, TrainConfig(epochs=1, batch_size=32, seed=3),
                          LoopSetup(loss=LOSSES.get(name)(m=2)), progress=False, device=device)
        history = trainer.fit().history
        return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in history]

    cpu = run("cpu")
    with OnOtherDevice():
        other = run(OTHER)
    assert other == cpu


SMOOTHING = ["gaussian", "consistency", "gen-consistency", "macer"]
RECIPE = ('[model]\nspec = "scnn2:8-16"\n[data]\nname = "synthetic"\noptions = { shape = [1, 8, 8], num_classes = 4, '
          'size = 64 }\n[train]\nepochs = 1\nbatch_size = 32\n')


@pytest.mark.parametrize("name", SMOOTHING)
def test_each_loss_is_chosen_the_normal_way_from_the_cli_and_the_recipe(name, tmp_path):
    """`--loss NAME --loss-options JSON` on train, and `[train] loss` / `loss_options` in a recipe, train a few steps
    with the smoothing loss through the open registry; its own settings reach it and are recorded."""
    import json

    from cli_helpers import run_cli

    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    code, _, err = run_cli("train", "--recipe", recipe, "--loss", name, "--loss-options", '{"sigma": 0.5, "m": 2}',
                           "-q", "--out", tmp_path / "cli")
    assert code == 0, err
    training = json.loads((tmp_path / "cli" / "model.json").read_text())["training"]
    assert (training["loss"]["name"], training["loss"]["sigma"], training["loss"]["m"]) == (name, 0.5, 2)
    assert training["config"]["loss"] == name and len(training["history"]) == 1
    own_metric = {"macer": "macer_radius", "gen-consistency": "consistent_fraction"}.get(name)
    assert own_metric is None or own_metric in training["history"][0]  # the loss itself ran
    recipe.write_text(RECIPE + f'loss = "{name}"\nloss_options = {{ sigma = 0.12, m = 3 }}\n')
    code, _, err = run_cli("train", "--recipe", recipe, "-q", "--out", tmp_path / "recipe")
    assert code == 0, err
    loss = json.loads((tmp_path / "recipe" / "model.json").read_text())["training"]["loss"]
    assert (loss["name"], loss["sigma"], loss["m"]) == (name, 0.12, 3)
    code, _, err = run_cli("train", "--recipe", recipe, "--loss-options", '{"temperature": 4}', "-q", "--out",
                           tmp_path / "bad")
    assert code == 2 and f"loss '{name}' has no setting temperature" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad" / "model.pt").exists()


def test_compress_trains_its_stages_with_a_smoothing_loss(digits_run, tmp_path):
    """`compress --loss macer --loss-options …`: the masked retraining runs MACER, and the slim run says so."""
    from cli_helpers import run_cli

    from edgerobust.run import RunDir

    code, _, err = run_cli("compress", "--model", digits_run.path, "--out", tmp_path / "c", "--method", "l1",
                           "--keep", "50%", "--retrain-epochs", "1", "--adv", "none", "--no-evaluate", "--loss",
                           "macer", "--loss-options", '{"sigma": 0.5, "m": 2, "lam": 3.0}', "-q")
    assert code == 0, err
    retrain = RunDir.open(tmp_path / "c" / "retrain").manifest["training"]
    slim = RunDir.open(tmp_path / "c").manifest["training"]
    assert retrain["loss"] == slim["loss"]
    assert (slim["loss"]["name"], slim["loss"]["sigma"], slim["loss"]["m"], slim["loss"]["lam"]) == \
        ("macer", 0.5, 2, 3.0)
    assert "macer_radius" in retrain["history"][0]  # MACER's own metric: the loss ran, not just its name
