"""`edgerobust certify` end to end: certificates.json for a run's bundle, the table and the report section."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import run_cli

from edgerobust.bounds import ARITHMETIC_MODELS, Engine, from_onnx
from edgerobust.certify.core import certify_points
from edgerobust.config import ExportConfig
from edgerobust.export.api import export_run
from edgerobust.export.bundle import read_manifest
from edgerobust.report import render_report


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("certify") / "run"
    shutil.copytree(digits_run.path, run)
    config = ExportConfig(target="jetson-nano", fp16=True, calibration=0, golden=8)
    bundle = export_run(run, config, progress=False).bundle
    return run, bundle


def test_certify_writes_certificates_per_precision_and_arithmetic(exported):
    run, bundle = exported
    code, out, err = run_cli("certify", run, "--eps", "0.01,0.05", "--method", "ibp", "--n", "4")
    assert code == 0, err
    record = json.loads((run / "certificates.json").read_text())
    manifest = read_manifest(bundle)
    assert [a["precision"] for a in record["artifacts"]] == ["fp32", "fp16"]
    for artifact in record["artifacts"]:
        assert artifact["sha256"] == manifest["files"][artifact["file"]]["sha256"]
        names = [m["name"] for m in artifact["arithmetic_models"]]
        assert names == (["real", "fp32"] if artifact["precision"] == "fp32" else ["real", "fp16-fp32acc", "fp16"])
        for row in artifact["rows"]:
            assert 0 <= row["certified_accuracy"] <= artifact["clean_accuracy"]
            assert row["robust_error_bound"] == pytest.approx(1 - row["certified_accuracy"], abs=0)
        by_model = {}
        for row in artifact["rows"]:
            by_model.setdefault(row["arithmetic"], []).append(row["certified_accuracy"])
        for accuracies in by_model.values():  # a larger ball certifies no more points
            assert accuracies[1] <= accuracies[0]
        # the certified radius is certified: re-check each point at its radius
        engine = Engine(from_onnx(onnx.load(bundle / artifact["file"])))
        x = np.load(bundle / "golden_inputs.npy")[:4].astype(np.float64)
        predicted = engine.output(torch.from_numpy(x)).argmax(1).numpy()
        for model, radius in artifact["radius"].items():
            for i, r in enumerate(radius["per_point"]):
                if r > 0:
                    certs = certify_points(engine, x[i:i + 1], predicted[i:i + 1], r, "inf", "ibp",
                                           [ARITHMETIC_MODELS.get(model)])
                    assert certs.certified[model].all()
    assert "certificates (ibp, Linf, n=4" in out
    report = render_report(run).read_text()
    assert "## Certification" in report and (run / "figures" / "certified_radius.png").is_file()


@pytest.mark.parametrize("method", ["lipschitz", "peck"])
def test_certify_by_lipschitz_constants_writes_rows_that_crown_matches_or_beats_peck_beats_lipschitz(exported,
                                                                                                    method):
    run, bundle = exported
    code, out, err = run_cli("certify", run, "--eps", "0.002,0.05", "--method", method, "--norm", "2", "--n", "4",
                             "--precision", "fp32")
    assert code == 0, err
    record = json.loads((run / "certificates.json").read_text())
    assert record["method"] == method
    rows = record["artifacts"][0]["rows"]
    for row in rows:
        assert 0 <= row["certified_accuracy"] <= record["artifacts"][0]["clean_accuracy"]
    radius = record["artifacts"][0]["radius"]["real"]["mean"]
    engine = Engine(from_onnx(onnx.load(bundle / record["artifacts"][0]["file"])))
    x = np.load(bundle / "golden_inputs.npy")[:4].astype(np.float64)
    predicted = engine.output(torch.from_numpy(x)).argmax(1).numpy()
    from edgerobust.certify.core import certified_radius

    other = certified_radius(engine, x, predicted, "2", "lipschitz" if method == "peck" else "peck",
                             ARITHMETIC_MODELS.get("real"))
    if method == "peck":
        assert radius >= other.mean() - 0.5 * 2.0 ** -12
    else:
        assert radius <= other.mean() + 0.5 * 2.0 ** -12


def test_pipeline_certify_step_certifies_the_bundle_of_the_current_model(exported):
    from edgerobust.pipeline.certify_steps import certify_step
    from edgerobust.pipeline.context import PipelineContext
    from edgerobust.run import RunDir

    run, bundle = exported
    ctx = PipelineContext(out=bundle.parent, recipe={"export": {"target": "jetson-nano"}, "evaluate": {"eps": 0.01}},
                          run=RunDir.open(run))
    certify_step(ctx)
    record = json.loads((run / "certificates.json").read_text())
    assert record["method"] == "crown" and record["n"] == 8 and record["bundle"] == str(bundle)  # all 8 golden
    rows = [r for r in ctx.summary if r[0] == "certify"]
    accuracy = [r for r in rows if "certified acc." in r[1]]
    radius = {r[1]: r[2] for r in rows if "mean certified radius" in r[1]}
    # fp32: real, fp32; fp16: three arithmetic models; at ε/5 and ε; a certified radius per model
    assert len(accuracy) == 10 and {r[1].rsplit("@ε=", 1)[1] for r in accuracy} == {"0.002", "0.01"}
    assert {"fp32 real mean certified radius", "fp32 fp32 mean certified radius",
            "fp16 real mean certified radius"} <= set(radius)  # a vacuous arithmetic model has no radius
    assert all(isinstance(v, float) and v >= 0 for v in radius.values())
    by_eps = {r[1]: r[2] for r in accuracy}
    for name, small in by_eps.items():  # a smaller ball certifies at least the points the larger one does
        if name.endswith("@ε=0.002") and small != "vacuous":
            large = by_eps[name.replace("@ε=0.002", "@ε=0.01")]
            assert large == "vacuous" or small >= large


def test_export_vnnlib_writes_the_vnn_comp_layout_with_the_ball_of_each_point(exported, tmp_path):
    from edgerobust.bounds import Ball

    run, bundle = exported
    code, out, err = run_cli("certify", run, "--eps", "0.02", "--method", "ibp", "--n", "2", "--no-radius",
                             "--precision", "fp32", "--export-vnnlib", tmp_path / "bench")
    assert code == 0, err
    rows = (tmp_path / "bench" / "instances.csv").read_text().splitlines()
    assert rows == ["onnx/model.onnx,vnnlib/point_0.vnnlib,60", "onnx/model.onnx,vnnlib/point_1.vnnlib,60"]
    assert (tmp_path / "bench" / "onnx" / "model.onnx").read_bytes() == (bundle / "model.onnx").read_bytes()
    x = np.load(bundle / "golden_inputs.npy")[:1].astype(np.float64)
    label = int(np.load(bundle / "golden_labels.npy")[0])
    text = (tmp_path / "bench" / "vnnlib" / "point_0.vnnlib").read_text()
    lo, hi = (t.reshape(-1).numpy() for t in Ball(torch.from_numpy(x), 0.02).box())
    for i in (0, x.size // 2, x.size - 1):
        assert f"(assert (<= X_{i} {hi[i]!r}))" in text and f"(assert (>= X_{i} {lo[i]!r}))" in text
    assert text.count(">= Y_") == 9 and f"(>= Y_{label} Y_{label})" not in text
    code, out, err = run_cli("certify", run, "--eps", "0.02", "--export-vnnlib", tmp_path / "bench")
    assert code == 2 and "not an empty directory" in err


def test_certify_peck_sound_and_thesis_modes_write_and_label_their_bounds(exported):
    run, bundle = exported
    code, out, err = run_cli("certify", run, "--eps", "0.01", "--method", "peck", "--peck-mode", "sound", "--norm",
                             "2", "--n", "4", "--precision", "fp32", "--no-radius")
    assert code == 0, err
    record = json.loads((run / "certificates.json").read_text())
    peck = record["artifacts"][0]["peck"]
    assert record["peck_mode"] == "sound" and peck["certificate"] and record["artifacts"][0]["rows"]
    assert peck["minimal"]["violations"] == 0 and len(peck["per_point"]) == 4
    found = [f for f in peck["minimal"]["per_point"] if f is not None]
    assert all(k <= f for k, f in zip(peck["per_point"], peck["minimal"]["per_point"], strict=True) if f is not None)
    assert found and "sound mode (proven)" in out
    report = render_report(run).read_text()
    assert "Peck's lower bounds, sound mode (a certificate)" in report and "certified radius" in report
    code, out, err = run_cli("certify", run, "--eps", "0.01", "--method", "peck", "--peck-mode", "thesis", "--n", "4",
                             "--precision", "fp32")
    assert code == 0, err
    record = json.loads((run / "certificates.json").read_text())
    artifact = record["artifacts"][0]
    assert record["peck_mode"] == "thesis" and artifact["rows"] == [] and artifact["radius"] == {}
    assert not artifact["peck"]["certificate"] and "claimed" in artifact["peck"]
    assert "NOT a certificate" in out and "NOT a certificate" in artifact["peck"]["note"]
    report = render_report(run).read_text()
    assert "thesis mode (as published): not a certificate" in report
    code, out, err = run_cli("certify", run, "--eps", "0.01", "--method", "crown", "--peck-mode", "thesis")
    assert code == 2 and "--peck-mode thesis applies to --method peck only" in err
