"""distill_model: the teacher is measured, recorded and never trained; agreement early stopping; sweeps."""
from __future__ import annotations

import json

import pytest

from edgerobust.config import TrainConfig
from edgerobust.distill import DistillConfig, distill_model, temperature_sweep
from edgerobust.io import sha256_file
from edgerobust.run import RunDir

FAST = TrainConfig(epochs=2, batch_size=128, optimizer="adam", lr=1e-3, augment=False)


def test_student_manifest_records_its_teacher_and_the_teacher_is_untouched(digits_run, tmp_path):
    before = sha256_file(digits_run.weights_path)
    config = DistillConfig(student="mlp:8", method="ard", eps=0.05, steps=2, eval_n=50)
    run = distill_model(tmp_path / "s", digits_run.path, config, FAST, progress=False, device="cpu")
    assert sha256_file(digits_run.weights_path) == before
    d = run.manifest["distillation"]
    assert d["teacher"]["path"] == str(digits_run.path) and d["teacher"]["sha256"] == before
    assert 0 <= d["teacher"]["robust_accuracy"] <= d["teacher"]["clean_accuracy"] <= 1
    assert d["teacher"]["clean_accuracy"] == pytest.approx(digits_run.manifest["metrics"]["test_accuracy"])
    assert d["method"] == "ard" and d["settings"]["eps"] == 0.05 and d["settings"]["steps"] == 2
    assert run.manifest["parents"][-1]["role"] == "distilled from"
    reopened = RunDir.open(run.path)
    assert reopened.load_model()(reopened.load_model()[0].mean.new_zeros(1, 1, 8, 8)).shape == (1, 10)
    assert not run.checkpoint_path.exists()
    # the loop's train accuracy is agreement with the teacher (the loss supplies its targets)
    assert all("agreement" in row for row in run.manifest["training"]["history"])
    from edgerobust.report import render_report

    text = render_report(run).read_text()
    assert "## Distillation" in text and f"{d['teacher']['clean_accuracy']:.4g}" in text and "**ard**" in text


def test_agreement_early_stopping_keeps_the_best_epoch(digits_run, tmp_path):
    frozen = TrainConfig(epochs=5, batch_size=128, optimizer="sgd", lr=1e-9, momentum=0, weight_decay=0,
                         augment=False)
    config = DistillConfig(student="mlp:8", patience=2, eval_n=20)
    run = distill_model(tmp_path / "s", digits_run.path, config, frozen, progress=False, device="cpu")
    history = run.manifest["training"]["history"]
    assert len(history) == 3 and "has not improved for 2 epochs" in run.manifest["training"]["stopped_early"]


def test_unlabelled_pool_and_sweep_table(digits_run, tmp_path):
    config = DistillConfig(student="mlp:8", pool=["synthetic"], pool_size=300, eval_n=20)
    sweep = temperature_sweep(tmp_path / "sw", digits_run.path, [0.5, 2.0], config,
                              TrainConfig(epochs=1, batch_size=128, optimizer="adam", lr=1e-3, augment=False),
                              progress=False, device="cpu")
    saved = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [r["temperature"] for r in saved["rows"]] == [0.5, 2.0] == [r["temperature"] for r in sweep["rows"]]
    run = RunDir.open(tmp_path / "sw" / "T-2")
    assert run.manifest["distillation"]["pool"]["name"] == "pool:synthetic"
    assert run.manifest["distillation"]["settings"]["temperature"] == 2.0
