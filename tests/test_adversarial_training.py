"""Adversarial training: losses, ε/steps schedules, the catastrophic-overfitting guard, resume, CLI, digits target."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.attacks import get_attack
from edgerobust.data import load_dataset
from edgerobust.errors import EdgeRobustError
from edgerobust.models import build_model
from edgerobust.recipe import load_recipe
from edgerobust.training import (
    LOSSES,
    Callback,
    CatastrophicOverfittingGuard,
    EpsSchedule,
    StepState,
    TrainConfig,
    Trainer,
    build_training_loss,
)
from edgerobust.training.api import (
    TrainSetup,
    adversarial_from_recipe,
    adversarial_training,
    config_from_recipe,
    train_model,
)
from edgerobust.training.loop import LoopSetup


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def tiny_model(data, spec="scnn2:8-16", seed=0):
    torch.manual_seed(seed)
    return build_model(spec, data.input_shape, data.num_classes, data.mean, data.std)


# -- ε and step schedules ----------------------------------------------------------------------------------------

def test_staged_schedule_rises_every_third_and_steps_reset():
    s = EpsSchedule(0.3, "staged", epochs=9, steps=10, min_steps=2)
    assert [round(s.eps_at(e), 6) for e in range(9)] == [0.1] * 3 + [0.2] * 3 + [0.3] * 3
    assert [s.steps_at(e) for e in range(9)] == [2, 3, 4, 2, 3, 4, 2, 3, 4]
    capped = EpsSchedule(0.3, "staged", epochs=9, steps=3, min_steps=2)
    assert [capped.steps_at(e) for e in range(3)] == [2, 3, 3]


def test_linear_schedule_ramps_then_stays_and_steps_rise_after_the_ramp():
    s = EpsSchedule(0.1, "linear", epochs=10, ramp=0.5, start=0.02, steps=6, min_steps=1)
    assert s.eps_at(0) == pytest.approx(0.02) and s.eps_at(2.5) == pytest.approx(0.06)
    assert s.eps_at(5) == pytest.approx(0.1) and s.eps_at(9.9) == pytest.approx(0.1)
    assert [s.steps_at(e) for e in range(10)] == [1, 1, 1, 1, 1, 1, 2, 3, 4, 5]


def test_constant_schedule_and_fixed_steps():
    s = EpsSchedule(8 / 255, epochs=5, steps=7)
    assert {s.eps_at(t) for t in (0, 2.5, 5)} == {8 / 255} and {s.steps_at(e) for e in range(5)} == {7}


@pytest.mark.parametrize("kwargs", [dict(kind="staged", values=(0.1, 0.05, 0.2)), dict(kind="linear", start=0.2)])
def test_decreasing_schedule_is_rejected_with_one_line(kwargs):
    with pytest.raises(EdgeRobustError, match=r"ε schedule decreases") as err:
        EpsSchedule(0.1, epochs=6, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [(dict(kind="cubic"), "valid ε schedules: constant, linear, staged"),
                                            (dict(eps=1.5), "outside"), (dict(min_steps=20), "min_steps")])
def test_bad_schedule_settings(kwargs, message):
    with pytest.raises(EdgeRobustError, match=message):
        EpsSchedule(**{"eps": 0.1, "epochs": 4, **kwargs})


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["constant", "staged", "linear"]), eps=st.floats(0.0, 1.0), epochs=st.integers(1, 40),
       stages=st.integers(1, 6), ramp=st.floats(0.05, 1.0), start_frac=st.floats(0, 1), steps=st.integers(1, 20),
       min_frac=st.floats(0, 1), t=st.lists(st.floats(0, 1), min_size=2, max_size=8))
def test_schedule_invariants(kind, eps, epochs, stages, ramp, start_frac, steps, min_frac, t):
    min_steps = 1 + int(min_frac * (steps - 1))
    s = EpsSchedule(eps, kind, epochs=epochs, stages=stages, ramp=ramp, start=eps * start_frac, steps=steps,
                    min_steps=min_steps)
    values = [s.eps_at(x * epochs) for x in sorted(t)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))  # never decreases
    assert all(-1e-12 <= v <= s.max_eps + 1e-12 for v in values)
    for epoch in range(epochs):
        assert min_steps <= s.steps_at(epoch) <= steps
        if epoch and s.eps_at(epoch) > s.eps_at(epoch - 1):
            assert s.steps_at(epoch) == min_steps  # reset whenever ε rises


# -- the losses ------------------------------------------------------------------------------------------------------

def test_losses_are_registered_and_built_by_name():
    assert {"pgd-at", "fgsm-rs", "trades", "natural"} <= set(LOSSES.names())
    assert build_training_loss("pgd", eps=0.1).weight == 0.9  # Marshall's default w
    assert build_training_loss("fgsm-rs", eps=0.1).weight == 1.0
    assert build_training_loss("trades", eps=0.1).weight == 6.0
    with pytest.raises(EdgeRobustError, match=r"w must be in \[0, 1\]"):
        build_training_loss("pgd-at", eps=0.1, weight=1.5)
    with pytest.raises(EdgeRobustError, match="valid losss|valid loss"):
        build_training_loss("madry", eps=0.1)


# The losses below are recomputed along another path (separate forwards instead of one mixed batch): in float64 a
# mean of ≤ 64 cross-entropies in another summation order differs by ≤ ~64·2**-53 ≈ 7e-15 relative, and an attack's
# sign steps cannot flip on such differences; 1e-12 leaves a wide margin on any CPU.
REL64 = 1e-12


def test_pgd_at_is_the_mixed_loss_of_a_bounded_attack(digits):
    train, _ = digits
    model = tiny_model(train).double()
    x, y = train.images[:32].double(), train.labels[:32]
    loss = build_training_loss("pgd-at", eps=0.1, steps=3, weight=0.7)
    state = StepState(epoch=0, step=5, progress=0.0, epochs=1)
    out = loss(model, x, y, state)
    assert model.training  # the attack ran in eval mode and gave the mode back
    attack = get_attack("pgd", eps=0.1, steps=3, alpha=2.5 * 0.1 / 3, early_exit=False, seed=loss.step_seed(state))
    x_adv = attack(model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and (x_adv - x).abs().max() > 0.05
    expected = 0.7 * F.cross_entropy(model(x_adv), y) + 0.3 * F.cross_entropy(model(x), y)
    assert out.loss.item() == pytest.approx(expected.item(), rel=REL64)
    assert out.metrics["eps"] == 0.1 and out.metrics["steps"] == 3
    again = loss(model, x, y, state)  # the random start is a function of the step: resumable
    assert again.loss.item() == out.loss.item()
    other = loss(model, x, y, StepState(epoch=0, step=6, progress=0.0, epochs=1))
    assert other.loss.item() != out.loss.item()


def test_fgsm_rs_uses_one_step_of_1_25_eps(digits):
    train, _ = digits
    model = tiny_model(train).double()
    x, y = train.images[:16].double(), train.labels[:16]
    loss = build_training_loss("fgsm-rs", eps=0.1)
    out = loss(model, x, y, StepState(0, 0, 0.0, 1))
    attack = get_attack("fgsm-rs", eps=0.1, seed=loss.step_seed(StepState(0, 0, 0.0, 1)))
    assert attack.alpha == pytest.approx(0.125)
    assert out.loss.item() == pytest.approx(F.cross_entropy(model(attack(model, x, y)), y).item(), rel=REL64)
    assert loss.describe()["alpha"] == "1.25·eps" and out.metrics["steps"] == 1


def test_trades_adds_a_non_negative_kl_term(digits):
    train, _ = digits
    model = tiny_model(train).double()
    x, y = train.images[:32].double(), train.labels[:32]
    out = build_training_loss("trades", eps=0.1, steps=3, weight=2.0)(model, x, y, StepState(0, 0, 0.0, 1))
    natural = F.cross_entropy(model(x), y).item()
    assert out.metrics["train_kl"] > 0
    assert out.loss.item() == pytest.approx(natural + 2.0 * out.metrics["train_kl"], rel=REL64)


@pytest.mark.parametrize("name", ["pgd-at", "fgsm-rs", "trades"])
def test_each_loss_trains_and_records_adversarial_history(digits, name):
    train, test = digits
    loss = build_training_loss(name, eps=0.1, steps=2, epochs=2)
    result = Trainer(tiny_model(train), train.subset(256), TrainConfig(epochs=2, batch_size=64, augment=False),
                     LoopSetup(loss=loss, eval_data=test), progress=False).fit()
    for row in result.history:
        assert {"train_adv_accuracy", "eps", "steps", "test_accuracy"} <= set(row)
    assert result.history[-1]["eps"] == pytest.approx(0.1)
    assert loss.describe()["name"] == name and loss.describe()["schedule"]["eps"] == 0.1


# -- the robust built-in default ---------------------------------------------------------------------------------------

def test_digits_adv_recipe_reaches_95_clean_and_80_pgd20(tmp_path, digits):
    _, test = digits
    recipe = load_recipe("digits-adv")
    run = train_model(tmp_path / "adv", recipe["model"]["spec"], "digits", config_from_recipe(recipe),
                      TrainSetup(adversarial=adversarial_from_recipe(recipe), recipe=recipe), progress=False)
    model = run.load_model()
    x_adv = get_attack("pgd", eps=0.1, steps=20)(model, test.images, test.labels)
    with torch.no_grad():
        clean = (model(test.images).argmax(1) == test.labels).float().mean().item()
        robust = (model(x_adv).argmax(1) == test.labels).float().mean().item()
    assert clean >= 0.95 and robust >= 0.80, (clean, robust)
    history = run.manifest["training"]["history"]
    assert history[0]["eps"] < history[-1]["eps"] == pytest.approx(0.1)  # the linear ramp
    assert run.manifest["training"]["loss"]["name"] == "pgd-at"


# -- the catastrophic-overfitting guard --------------------------------------------------------------------------------

class Snapshots(Callback):
    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, trainer, epoch, metrics):
        self.weights[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}


class CollapseInEpoch(Callback):
    """Wreck the classifier during one epoch, as catastrophic overfitting does to PGD accuracy."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_after_step(self, trainer):
        if trainer.epoch == self.epoch:
            with torch.no_grad():
                last = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)][-1]
                last.weight.copy_(torch.randn(last.weight.shape, generator=torch.Generator().manual_seed(1)) * 5)


def _guarded_run(train, callbacks, epochs=4):
    guard = CatastrophicOverfittingGuard(eps=0.05, steps=5, batch_size=128, max_drop=0.2)
    snapshots = Snapshots()
    config = TrainConfig(epochs=epochs, batch_size=32, schedule="constant", augment=False)
    setup = LoopSetup(loss=build_training_loss("fgsm-rs", eps=0.05), callbacks=[snapshots, *callbacks, guard])
    trainer = Trainer(tiny_model(train, "scnn2:16-32"), train, config, setup, progress=False)
    return trainer, trainer.fit(), guard, snapshots


def test_guard_fires_on_a_collapse_and_restores_the_previous_epoch(digits):
    train, _ = digits
    trainer, result, guard, snapshots = _guarded_run(train, [CollapseInEpoch(2)])
    assert guard.fired and guard.fired["epoch"] == 3 and trainer.epoch == 3
    assert result.stopped_early.startswith("catastrophic overfitting in epoch 3") and "restored" in result.stopped_early
    restored = trainer.model.state_dict()
    assert all(torch.equal(restored[k], snapshots.weights[1][k]) for k in restored)
    assert result.history[-1]["guard_pgd_accuracy"] < guard.best - 0.2


def test_guard_stays_quiet_on_a_healthy_run(digits):
    train, _ = digits
    trainer, result, guard, _ = _guarded_run(train, [], epochs=3)
    assert guard.fired is None and result.stopped_early is None and trainer.epoch == 3
    assert all("guard_pgd_accuracy" in row for row in result.history)


def test_guard_settings_are_checked():
    with pytest.raises(EdgeRobustError, match="max_drop"):
        CatastrophicOverfittingGuard(eps=0.1, max_drop=0)


# -- resume -----------------------------------------------------------------------------------------------------

class Interrupt(Callback):
    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == 2:  # Ctrl-C during epoch 3: the checkpoint holds epochs 1-2
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["pgd", "fgsm-rs"])
def test_resumed_adversarial_run_reaches_the_same_weights(tmp_path, method):
    config = TrainConfig(epochs=4, batch_size=64, augment=True, seed=3)
    adversarial = {"method": method, "eps": 0.1, "steps": 3, "min_steps": 1, "schedule": "staged", "stages": 2}
    setup = TrainSetup(data_options=None, adversarial=adversarial)
    full = train_model(tmp_path / "full", "scnn2:8-16", "digits", config, setup, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_model(tmp_path / "part", "scnn2:8-16", "digits", config, replace(setup, callbacks=[Interrupt()]),
                    progress=False)
    resumed = train_model(tmp_path / "part", "scnn2:8-16", "digits", config, replace(setup, resume=True),
                          progress=False)
    a, b = full.load_model().state_dict(), resumed.load_model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    timing = {"seconds", "images_per_second"}
    strip = [{k: v for k, v in row.items() if k not in timing} for row in full.manifest["training"]["history"]]
    assert [{k: v for k, v in row.items() if k not in timing} for row in resumed.manifest["training"]["history"]] \
        == strip
    steps = [row["steps"] for row in resumed.manifest["training"]["history"]]
    # PGD: rising per epoch, reset when ε rises at the second stage; FGSM-RS always takes one step
    assert steps == ([1, 2, 1, 2] if method == "pgd" else [1, 1, 1, 1])


def test_adversarial_settings_are_checked():
    with pytest.raises(EdgeRobustError, match="method = 'madry' is not one of: pgd"):
        adversarial_training({"method": "madry"}, 3)
    with pytest.raises(EdgeRobustError, match=r"\[adversarial\]: unknown key\(s\) epsilon"):
        adversarial_training({"epsilon": 0.1}, 3)
    loss, guard = adversarial_training({"method": "fgsm-rs", "eps": "8/255"}, 3)
    assert loss.schedule.eps == pytest.approx(8 / 255) and guard is not None  # guard on by default for FGSM-RS
    assert adversarial_training({"method": "none"}, 3) == (None, None)


# -- the command line ---------------------------------------------------------------------------------------

def test_train_cli_adversarial(tmp_path):
    code, out, err = run_cli("train", "--model", "scnn2:8-16", "--epochs", "2", "--adv", "pgd", "--eps", "8/255",
                             "--adv-steps", "2", "--adv-weight", "0.8", "--eps-schedule", "linear", "-q",
                             "--out", tmp_path / "run")
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "model.json").read_text())
    loss = manifest["training"]["loss"]
    assert loss["name"] == "pgd-at" and loss["weight"] == 0.8 and loss["schedule"]["kind"] == "linear"
    assert loss["schedule"]["eps"] == pytest.approx(8 / 255) and loss["schedule"]["steps"] == 2
    assert "train_adv_accuracy" in manifest["training"]["history"][-1]


def test_train_cli_decreasing_eps_schedule_is_one_line(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[adversarial]\nmethod = "pgd"\neps = 0.1\nschedule = "staged"\nvalues = [0.1, 0.05]\n')
    code, out, err = run_cli("train", "--recipe", recipe, "--epochs", "1", "-q", "--out", tmp_path / "run")
    assert code == 2 and "ε schedule decreases (0.1 -> 0.05)" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("train", "--adv", "madry", "--epochs", "1", "-q", "--out", tmp_path / "run2")
    assert code == 2 and "--adv = 'madry' is not one of: pgd" in err  # the option typed, not the key
