"""Song's PCA first layer end to end: `train --pca` fits it on the training split, the run records and rebuilds it,
export gives standard ONNX operators within the derived golden tolerance, and `smooth` certifies the model."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import run_cli

from edgerobust.config import ExportConfig
from edgerobust.data import load_dataset
from edgerobust.errors import EdgeRobustError
from edgerobust.models.pca import PCAProjection, fit_pca, pca_settings
from edgerobust.run import RunDir
from edgerobust.runner.tolerance import compare_with_tolerance
from edgerobust.training import TrainConfig
from edgerobust.training.api import TrainSetup, train_model

U64 = 2.0 ** -53
PCA = {"sigma": 0.25, "k": 5}


@pytest.fixture(scope="module")
def pca_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pca") / "run"
    return train_model(out, "scnn2:4-8", "digits", TrainConfig(epochs=1, batch_size=128, augment=False),
                       TrainSetup(model_options={"pca": PCA}), progress=False)


def test_train_fits_the_layer_on_the_training_split_and_records_it(pca_run):
    record = pca_run.manifest["model"]["pca"]
    train = load_dataset("digits", "train")
    reference = fit_pca(train.images, 0.25, 5, dtype=torch.float64)  # the same fit, kept in float64
    dims = int(np.prod(train.input_shape))
    assert record["components"] == reference.basis.shape[1] < dims and record["dims"] == dims
    assert record["fitted_on"] == {"split": "train", "images": len(train)} and 0 < record["variance_kept"] <= 1
    layer = pca_run.load_model().pca
    assert isinstance(layer, PCAProjection) and layer.basis.shape == (dims, record["components"])
    # the stored float32 buffers are the float64 fit rounded once
    assert torch.equal(layer.mean, reference.mean.float()) and torch.equal(layer.basis, reference.basis.float())
    w = layer.basis.double()  # orthonormal after that rounding: |WᵀW − I| within D·(2·u32) + eigh's 100·D·u64
    gap = torch.abs(w.T @ w - torch.eye(w.shape[1], dtype=torch.float64)).max().item()
    assert gap <= dims * 2 * 2.0 ** -24 * 1.01 + 100 * dims * U64


def test_the_run_reloads_the_same_model(pca_run):
    x = load_dataset("digits", "test").images[:16]
    model = pca_run.load_model()
    again = RunDir.open(pca_run.path).load_model()
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
        assert torch.equal(model.pca.basis, again.pca.basis) and torch.equal(model.pca.mean, again.pca.mean)
    assert list(dict(model.named_children())) == ["pca", "normalize", "net"]


def test_export_is_standard_onnx_within_the_golden_tolerance(pca_run, tmp_path):
    from edgerobust.export.api import export_run

    shutil.copytree(pca_run.path, tmp_path / "run")
    bundle = export_run(RunDir.open(tmp_path / "run"), ExportConfig(target="jetson-nano", fp16=True, calibration=0,
                                                                    golden=16), progress=False).bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    golden_in = np.load(bundle / "golden_inputs.npy")
    golden_out = np.load(bundle / "golden_outputs.npy")
    for precision in ("fp32", "fp16"):
        entry = manifest["models"][precision]
        nodes = onnx.load(str(bundle / entry["file"])).graph.node
        assert all(n.domain in ("", "ai.onnx") for n in nodes)  # standard operators only
        assert [n.op_type for n in nodes if n.op_type == "MatMul"] == ["MatMul", "MatMul"]  # the projection
        tolerance = np.load(bundle / entry["golden_tolerance"]["file"])  # derived, finite: the analysis covers it
        assert np.isfinite(tolerance).all()
        session = ort.InferenceSession(str(bundle / entry["file"]), providers=["CPUExecutionProvider"])
        feed = golden_in.astype(np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32)
        got = session.run(None, {session.get_inputs()[0].name: feed})[0]
        assert compare_with_tolerance(got, golden_out, tolerance)["passed"], precision


def test_smooth_certifies_the_pca_model_on_torch_and_onnxruntime(pca_run, tmp_path):
    from edgerobust.export.api import export_run
    from edgerobust.smoothing import smooth_run

    shutil.copytree(pca_run.path, tmp_path / "run")
    export_run(RunDir.open(tmp_path / "run"), ExportConfig(target="x86-cpu", calibration=0, golden=4, fp16=False),
               progress=False)
    small = {"n0": 8, "n": 40, "points": 3, "batch": 20, "sigma": 0.25, "progress": False}
    (torch_entry,) = smooth_run(tmp_path / "run", **small)
    (ort_entry,) = smooth_run(tmp_path / "run", runtime="ort-cpu", **small)
    for entry in (torch_entry, ort_entry):
        assert entry["complete"] and all(sum(p["counts"]) == 40 for p in entry["points"])
    assert torch_entry["record"]["architecture"] == ort_entry["record"]["architecture"]


@pytest.mark.parametrize("options, message", [
    ({}, "needs sigma"), ({"sigma": 0}, "sigma must be a positive number"), ({"sigma": 0.25, "k": -1}, "k must be"),
    ({"sigma": 0.25, "components": 0}, "components must be a positive integer"), ({"sigma": 0.25, "kk": 5}, "unknown"),
    (0.25, "must be a table")])
def test_bad_pca_settings_are_one_line(options, message):
    with pytest.raises(EdgeRobustError, match=message):
        pca_settings(options)


def test_cli_train_pca_and_its_bad_input(tmp_path):
    code, _, err = run_cli("train", "--data", "digits", "--model", "scnn2:4-8", "--epochs", "1", "--pca", "-0.5",
                           "--out", tmp_path / "bad", "-q")
    assert code == 2 and "sigma must be a positive number" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()
    code, _, err = run_cli("train", "--data", "digits", "--pca-k", "10", "--out", tmp_path / "bad2", "-q")
    assert code == 2 and "--pca-k needs --pca" in err and not (tmp_path / "bad2").exists()
    code, out, err = run_cli("train", "--data", "digits", "--model", "scnn2:4-8", "--epochs", "1", "--pca", "0.25",
                             "--pca-k", "10", "--no-augment", "--out", tmp_path / "run", "-q")
    assert code == 0, err
    record = RunDir.open(tmp_path / "run").manifest["model"]["pca"]
    assert (record["sigma"], record["k"]) == (0.25, 10.0) and "PCA first layer" in out


def test_a_damaged_pca_record_is_one_line(pca_run, tmp_path):
    from edgerobust.run import check_model_info

    info = dict(pca_run.manifest["model"], pca={**pca_run.manifest["model"]["pca"], "components": 10 ** 6})
    with pytest.raises(EdgeRobustError, match="model.pca must be a table whose components"):
        check_model_info(info, tmp_path / "model.json")


def test_the_lipschitz_bound_counts_the_layer_as_non_expansive(pca_run):
    from edgerobust.models.lipschitz import lipschitz_bound

    model = pca_run.load_model()
    shape = pca_run.input_shape
    with_pca = lipschitz_bound(model, shape, iterations=5)
    without = lipschitz_bound(torch.nn.Sequential(model.normalize, model.net), shape, iterations=5)
    assert with_pca.upper == without.upper  # the projection's factor is exactly 1
    assert [layer for layer in with_pca.layers if layer.name == "pca"][0].norm == 1.0
