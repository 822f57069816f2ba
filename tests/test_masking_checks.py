"""Evaluation checks that can fail (issue 9 §3): each check is shown failing on the case it exists for."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgerobust.attacks import get_attack, perturbation_norm
from edgerobust.config import EvaluateConfig
from edgerobust.data import load_dataset
from edgerobust.evaluation import masking
from edgerobust.evaluation.api import evaluate_run
from edgerobust.evaluation.curve import robustness_curve
from edgerobust.evaluation.records import load_points, settings_key
from edgerobust.io import read_json
from edgerobust.run import RunDir
from edgerobust.training.adversarial import build_training_loss
from edgerobust.training.losses import StepState


class InputQuantised(nn.Module):
    """x -> model(round(3x)/3): four grey levels. Rounding has zero gradient almost everywhere, so gradient
    attacks see a flat loss while the model is as breakable as ever: the classic masked defence."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)


@pytest.fixture(scope="module")
def points():
    test = load_dataset("digits", "test").subset(150)
    return test.images, test.labels


def test_curve_check_fails_on_a_model_behind_input_quantisation_and_passes_on_an_honest_one(digits_run, points):
    x, y = points
    model = digits_run.load_model()
    masked = InputQuantised(model).eval()
    curve = robustness_curve(masked, x, y, [0, 0.1, 0.3, 0.5], steps=10, num_classes=10)
    assert curve["points"][-1][1] > 0.1  # the attack found nothing to follow
    result = masking.curve_reaches_chance(curve)
    assert result["status"] == masking.FAIL and "ε=0.5" in result["detail"]
    honest = robustness_curve(model, x, y, [0, 0.1, 0.2, 0.3, 0.5], steps=10, num_classes=10)
    assert masking.curve_reaches_chance(honest)["status"] == masking.PASS
    assert masking.curve_reaches_chance(None)["status"] == masking.NOT_RUN


def test_more_effort_flags_an_under_converged_attack(digits_run, points):
    x, y = points
    model = digits_run.load_model()
    one_step = masking.more_effort(model, x, y, 0.2, steps=1)  # PGD-1 is far from converged on a natural model
    assert one_step["status"] == masking.FAIL and "lowered accuracy" in one_step["detail"]
    assert masking.more_effort(model, x, y, 0.1, steps=10)["status"] == masking.PASS


def test_black_box_rule_is_autoattacks_two_per_mille():
    def suite(square_breaks: int, n: int = 1000):
        return {"n": n, "cumulative": [["clean", 0.9], ["apgd-ce", 0.5], ["apgd-t", 0.4],
                               ["square", (400 - square_breaks) / n]]}

    assert masking.black_box_not_stronger(suite(2))["status"] == masking.PASS  # 0.2%: allowed
    failed = masking.black_box_not_stronger(suite(3))  # 0.3%: more than AutoAttack tolerates
    assert failed["status"] == masking.FAIL and "at most 0.2%" in failed["detail"]


def test_fgsm_rs_with_random_init_false_is_plain_fgsm(digits_run, points):
    x, y = points[0][:32], points[1][:32]
    model = digits_run.load_model()
    plain = build_training_loss("fgsm-rs", eps=0.1, random_init=False)
    a, b = (plain(model, x, y, StepState(0, step, 0.0, 1)).loss.item() for step in (0, 1))
    assert a == b  # no random start: the step (and so the seed) changes nothing
    fgsm = get_attack("fgsm", eps=0.1)(model, x, y)
    assert a == pytest.approx(F.cross_entropy(model(fgsm), y).item(), rel=1e-6)
    assert plain.describe()["random_init"] is False
    rs = build_training_loss("fgsm-rs", eps=0.1)
    assert rs(model, x, y, StepState(0, 0, 0.0, 1)).loss.item() != rs(model, x, y, StepState(0, 1, 0.0, 1)).loss.item()


def test_results_are_keyed_by_settings_with_per_point_masks_and_examples(digits_run, tmp_path):
    import shutil

    shutil.copytree(digits_run.path, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    common = dict(n=40, steps=5, square_queries=20, n_target_classes=2, minimal=None, masking_checks=False)
    first = evaluate_run(run, EvaluateConfig(eps=0.05, **common), progress=False)
    second = evaluate_run(run, EvaluateConfig(eps=0.1, **common), progress=False)
    assert first["key"] != second["key"] and first["key"] == settings_key(first["settings"])
    stored = read_json(run.file("robustness.json"))
    assert set(stored["results"]) == {first["key"], second["key"]} and stored["key"] == second["key"]
    assert stored["results"][first["key"]]["robust_accuracy"] == first["robust_accuracy"]
    test = load_dataset("digits", "test").subset(40)
    model = run.load_model()
    for result in (first, second):
        arrays = load_points(run.path / result["points"]["file"])
        assert arrays["x_adv"].dtype == np.float32 and arrays["labels"].dtype == np.int64
        assert arrays["robust"].dtype == bool and list(arrays["indices"]) == list(range(40))
        x_adv = torch.from_numpy(arrays["x_adv"])
        assert perturbation_norm(x_adv, test.images, "linf").max() <= result["eps"] + 1e-6
        assert 0 <= x_adv.min() and x_adv.max() <= 1
        with torch.no_grad():
            correct = (model(x_adv).argmax(1) == test.labels).numpy()
        assert (arrays["robust"] == correct).all()  # robust = the model still classifies the stored example
        assert arrays["robust"].mean() == pytest.approx(result["robust_accuracy"])


def test_compress_and_evaluate_attack_the_same_points():
    from edgerobust.evaluation.point import evaluation_subset

    test = load_dataset("digits", "test")
    images, labels = evaluation_subset(test, 300)
    assert torch.equal(images, test.subset(300).images) and torch.equal(labels, test.subset(300).labels)
