"""Evaluation: cumulative suite, curve, transfer, ensembles, minimal perturbations, masking checks, CLI, pipeline."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from cli_helpers import run_cli
from torch import nn

from edgerobust.attacks import get_attack
from edgerobust.data import load_dataset
from edgerobust.errors import EdgeRobustError
from edgerobust.evaluation import masking, robust_accuracy, standard_suite
from edgerobust.evaluation.curve import robustness_curve
from edgerobust.evaluation.ensemble import SoftmaxEnsemble
from edgerobust.evaluation.minimal import minimal_perturbations
from edgerobust.evaluation.transfer import transfer_matrix
from edgerobust.run import RunDir


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", "test").subset(150)


@pytest.fixture()
def run_copy(digits_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(digits_run.path, path)
    return RunDir.open(path)


class GradientFree(nn.Module):
    """Gradient masking by construction: the input's gradient is zero, the predictions are the model's."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x * 0 + x.detach())


def test_standard_suite_is_cumulative_non_increasing_and_serialisable(digits_run, digits_test):
    model = digits_run.load_model()
    result = standard_suite(model, digits_test.images, digits_test.labels, 0.1, steps=20, square_queries=100,
                            n_target_classes=3, progress=False)
    names = [name for name, _ in result.cumulative]
    assert names == ["clean", "apgd-ce", "apgd-t", "square"]
    values = [acc for _, acc in result.cumulative]
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))
    assert result.robust_accuracy == values[-1] and result.clean_accuracy == values[0]
    assert values[-1] < values[0]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["bound"] == "upper" and [a["attack"] for a in data["attacks"]] == names[1:]
    assert data["attacks"][1]["n_target_classes"] == 3 and data["attacks"][2]["queries"] == 100
    # each attack only sees the points every earlier attack failed on
    for before, record in zip(values, data["attacks"], strict=False):
        assert record["attacked"] == round(before * len(digits_test))


def test_suite_is_deterministic_under_a_seed(digits_run, digits_test):
    model = digits_run.load_model()
    runs = [standard_suite(model, digits_test.images, digits_test.labels, 0.08, steps=10, square_queries=50,
                           n_target_classes=2, seed=3, progress=False) for _ in range(2)]
    assert runs[0].cumulative == runs[1].cumulative
    assert torch.equal(runs[0].robust_mask, runs[1].robust_mask)


def test_the_suite_costs_less_as_points_break(digits_run, digits_test):
    model = digits_run.load_model()
    weak = standard_suite(model, digits_test.images, digits_test.labels, 0.02, steps=10, square_queries=50,
                          n_target_classes=2, progress=False)
    strong = standard_suite(model, digits_test.images, digits_test.labels, 0.3, steps=10, square_queries=50,
                            n_target_classes=2, progress=False)
    assert sum(a["attacked"] for a in strong.attacks) < sum(a["attacked"] for a in weak.attacks)


def test_l2_suite_skips_square_and_says_so(digits_run, digits_test):
    result = standard_suite(digits_run.load_model(), digits_test.images, digits_test.labels, 0.5, norm="l2",
                            steps=10, n_target_classes=2, progress=False)
    assert [n for n, _ in result.cumulative] == ["clean", "apgd-ce", "apgd-t"]
    assert any("square" in s for s in result.skipped)


def test_robustness_curve_starts_clean_and_stops_below_chance(digits_run, digits_test):
    model = digits_run.load_model()
    curve = robustness_curve(model, digits_test.images, digits_test.labels, steps=10, num_classes=10)
    points = curve["points"]
    clean = robust_accuracy(model, digits_test.images, digits_test.labels, get_attack("pgd", eps=0.0))
    assert points[0] == [0.0, clean]
    assert curve["reached_below_chance"] and points[-1][1] < 0.1
    assert all(acc >= 0.1 for _, acc in points[:-1])
    with pytest.raises(EdgeRobustError, match="start at 0"):
        robustness_curve(model, digits_test.images, digits_test.labels, [0.1, 0.2])


def test_transfer_matrix_diagonal_is_white_box_accuracy(digits_run, digits_test):
    models = {"trained": digits_run.load_model(), "same": digits_run.load_model()}
    attack = get_attack("pgd", eps=0.1, steps=10, early_exit=False)
    result = transfer_matrix(models, digits_test.images, digits_test.labels, attack)
    x_adv = attack(models["trained"], digits_test.images, digits_test.labels)
    white_box = (models["trained"](x_adv).argmax(1) == digits_test.labels).float().mean().item()
    assert result["accuracy"][0][0] == pytest.approx(white_box)
    assert result["accuracy"][1][0] == pytest.approx(white_box)  # identical models: transfer = white-box
    clean = (models["trained"](digits_test.images).argmax(1) == digits_test.labels).float().mean()
    assert result["accuracy"][0][0] < clean
    with pytest.raises(EdgeRobustError, match="at least two models"):
        transfer_matrix({"one": models["trained"]}, digits_test.images, digits_test.labels, attack)


def test_ensemble_is_attacked_end_to_end(digits_run, digits_test):
    model = digits_run.load_model()
    ensemble = SoftmaxEnsemble([model, digits_run.load_model()])
    assert torch.allclose(ensemble(digits_test.images).softmax(1), model(digits_test.images).softmax(1), atol=1e-5)
    # CE is invariant to shifting a row of logits, so the ensemble of one model twice has the model's gradients; in
    # float64 they agree to ~1e-16, no PGD sign step or decision can tell them apart, and the accuracies are equal
    attack = get_attack("pgd", eps=0.1, steps=10)
    images = digits_test.images.double()
    assert robust_accuracy(ensemble.double(), images, digits_test.labels, attack) == robust_accuracy(
        model.double(), images, digits_test.labels, attack)
    with pytest.raises(EdgeRobustError, match="at least two"):
        SoftmaxEnsemble([model])


def test_minimal_perturbation_statistics(digits_run, digits_test):
    stats = minimal_perturbations(digits_run.load_model(), digits_test.images, digits_test.labels, "fgs-search")
    assert 0.9 <= stats["success_rate"] <= 1
    for norm in ("linf", "l2"):
        s = stats[norm]
        assert 0 < s["min"] <= s["median"] <= s["max"] and s["min"] <= s["mean"] <= s["max"] and s["std"] >= 0
    assert stats["l2"]["median"] > stats["linf"]["median"]  # 64 pixels: L2 exceeds L∞
    assert stats["attack"]["attack"] == "fgs-search"


def test_masking_checks_pass_on_an_honest_model_and_fail_loudly_on_a_masked_one(digits_run, digits_test):
    model = digits_run.load_model()
    x, y = digits_test.images, digits_test.labels
    assert masking.large_eps(model, x, y)["status"] == masking.PASS
    assert masking.more_effort(model, x, y, 0.1, steps=5)["status"] == masking.PASS
    masked = GradientFree(model)
    assert masking.large_eps(masked, x, y)["status"] == masking.FAIL
    suite = standard_suite(masked, x, y, 0.15, steps=10, square_queries=300, n_target_classes=2, progress=False)
    assert masking.black_box_not_stronger(suite.to_dict())["status"] == masking.FAIL


def test_masking_checks_on_recorded_results():
    rising = {"points": [[0, 0.9], [0.1, 0.5], [0.2, 0.6]]}
    assert masking.curve_monotone(rising)["status"] == masking.FAIL
    assert masking.curve_monotone({"points": [[0, 0.9], [0.1, 0.5], [0.2, 0.2]]})["status"] == masking.PASS
    assert masking.curve_monotone(None)["status"] == masking.NOT_RUN
    transfer = {"models": ["a", "b"], "accuracy": [[0.4, 0.3], [0.2, 0.5]]}
    assert masking.transfer_not_stronger(transfer)["status"] == masking.FAIL
    assert masking.transfer_not_stronger({"models": ["a", "b"], "accuracy": [[0.4, 0.8], [0.7, 0.5]]})[
        "status"] == masking.PASS
    assert masking.any_failed([masking.curve_monotone(rising)])


def test_evaluate_cli_writes_json_manifest_plots_and_report(run_copy, tmp_path):
    code, out, err = run_cli("evaluate", run_copy.path, "--eps", "0.1", "--n", "80", "--steps", "10", "--queries",
                             "50", "--targets", "2", "--curve", "--curve-steps", "5", "--attack", "fgsm", "-q")
    assert code == 0, err
    assert "apgd-ce" in out and "upper bound" in out and "gradient-masking checks" in out
    result = json.loads((run_copy.path / "robustness.json").read_text())
    assert result["n"] == 80 and result["attacks"][0]["attack"] == "fgsm"
    manifest = RunDir.open(run_copy.path).manifest
    assert manifest["robustness"]["robust_accuracy"] == result["robust_accuracy"]
    assert "robustness" in manifest["artifacts"]
    assert (run_copy.path / "figures" / "robustness_curve.png").is_file()
    code, _, err = run_cli("report", run_copy.path)
    assert code == 0, err
    report = (run_copy.path / "report.md").read_text()
    assert "## Robustness (attacks)" in report and "upper bound" in report and "Gradient-masking checks" in report


def test_evaluate_cli_transfer_and_ensemble(run_copy, digits_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(digits_run.path, other)
    code, out, err = run_cli("evaluate", run_copy.path, "--suite", "none", "--eps", "0.1", "--n", "40",
                             "--transfer", other, "--steps", "5", "--minimal", "none", "--no-masking", "-q")
    assert code == 0, err
    assert "transfer accuracy" in out and (run_copy.path / "figures" / "transfer_matrix.png").is_file()
    code, out, err = run_cli("evaluate", run_copy.path, "--eps", "0.1", "--n", "40", "--ensemble", other, "--steps",
                             "5", "--queries", "20", "--targets", "2", "--minimal", "none", "--no-masking", "-q")
    assert code == 0, err
    assert json.loads((run_copy.path / "robustness.json").read_text())["ensemble"]["members"][1] == str(other)


@pytest.mark.parametrize(("args", "message"), [
    (["--eps", "2"], "outside [0, 1]"),
    (["--eps", "abc"], "is not a number"),
    (["--norm", "l3"], "--norm = 'l3' is not one of: linf, l2"),
    (["--attack", "nope"], "unknown attack 'nope'"),
    (["--suite", "huge"], "--suite = 'huge' is not one of: standard, none"),
    (["--n", "0"], "--n = 0 must be at least 1"),
])
def test_evaluate_cli_bad_input_gives_one_line_and_exit_2(run_copy, args, message):
    code, out, err = run_cli("evaluate", run_copy.path, *args, "-q")
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # one message (rich may soft-wrap a long line)


def test_evaluate_cli_missing_run(tmp_path):
    code, _, err = run_cli("evaluate", tmp_path / "missing")
    assert code == 2 and "does not exist" in err


def test_pipeline_evaluate_step(run_copy, tmp_path):
    from edgerobust.pipeline import PipelineContext, run_steps

    recipe = {"evaluate": {"eps": 0.1, "n": 60, "steps": 5, "square_queries": 20, "n_target_classes": 2,
                           "curve": True, "curve_steps": 5, "masking_steps": 2}}
    ctx = PipelineContext(out=tmp_path, recipe=recipe, progress=False, run=run_copy)
    run_steps(ctx, ["evaluate"])
    whats = [what for step, what, _ in ctx.summary if step == "evaluate"]
    assert any("robust accuracy" in w for w in whats) and "gradient-masking checks" in whats
    ctx.recipe = {"evaluate": {"epss": 0.1}}
    with pytest.raises(EdgeRobustError, match=r"\[evaluate\]: unknown key\(s\) epss"):
        run_steps(ctx, ["evaluate"])
