"""Your ONNX (issue 26): a foreign ONNX classifier, exported by plain torch.onnx outside edgerobust, becomes a run that
evaluation (query-only), export for every target (int8 too), verify, bench, certify and device replay take."""
from __future__ import annotations

import json
import sys
import types
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import run_cli
from onnx import TensorProto, helper
from torch import nn
from user_data import image_folder

from edgerobust.data import load_dataset
from edgerobust.imports import ImportSetup, OnnxImportError, import_onnx
from edgerobust.models.onnx_model import OnnxClassifier, has_gradients
from edgerobust.run import RunDir


def foreign_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5 * 5, 3)).eval()


def torch_onnx(module: nn.Module, path, shape=(1, 3, 10, 10), **kwargs):
    """What another team hands over: torch.onnx's default export (fixed batch 1, its own names)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(*shape),), str(path), dynamo=False, input_names=["pixels"],
                          output_names=["scores"], opset_version=17, **kwargs)
    return path


def original(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images") / "f", per_class=10, size=(10, 10))


@pytest.fixture(scope="module")
def onnx_run(folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    path = torch_onnx(foreign_net(), tmp / "foreign.onnx")
    return import_onnx(tmp / "run", path, ImportSetup(data="imagefolder", data_root=folder))


def test_the_run_is_the_file_with_bundle_names_and_a_dynamic_batch(onnx_run, folder):
    info = onnx_run.manifest["model"]
    assert (info["format"], info["input_shape"], info["num_classes"]) == ("onnx", [3, 10, 10], 3)
    source = info["source"]
    assert (source["kind"], source["input"], source["output"], source["opset"]) == ("onnx", "pixels", "scores", 17)
    graph = onnx.load(str(onnx_run.file("model.onnx"))).graph
    assert graph.input[0].name == "input" and graph.output[0].name == "logits"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    model = RunDir.open(onnx_run.path).load_model()
    assert not has_gradients(model)
    x = torch.rand(5, 3, 10, 10)
    expected = np.concatenate([original(source["file"], x[i:i + 1].numpy()) for i in range(5)])
    assert np.array_equal(model(x).numpy(), expected)  # the same graph, one batch of 5 instead of five of 1
    test = load_dataset("imagefolder", "test", folder)
    predictions = np.concatenate([original(source["file"], test.images[i:i + 1].numpy()).argmax(1)
                                  for i in range(len(test))])
    assert onnx_run.manifest["metrics"]["test_accuracy"] == float((predictions == test.labels.numpy()).mean())
    conversion = source["torch_conversion"]
    assert conversion["available"] is False and "onnx2torch" in conversion["reason"]


def test_query_only_evaluation_export_verify_and_bench(onnx_run, tmp_path):
    import shutil

    shutil.copytree(onnx_run.path, tmp_path / "run")
    run = tmp_path / "run"
    code, _, err = run_cli("evaluate", run, "--n", "6")  # the suite starts with APGD: gradients
    assert code == 2 and "no gradients; use query-only attacks (square)" in err
    code, _, err = run_cli("evaluate", run, "--n", "6", "--suite", "none", "--attack", "square", "--queries", "20",
                           "--minimal", "none", "--no-masking", "-q")
    assert code == 0, err
    for target in ("x86-cpu", "jetson"):  # jetson: opset 13, fp16 converted from the given graph
        code, _, err = run_cli("export", run, "--target", target, "-q")
        assert code == 0, err
    manifest = json.loads((run / "export-jetson-nano" / "manifest.json").read_text())
    assert manifest["opset"] == 13 and set(manifest["models"]) == {"fp32", "fp16"}
    assert manifest["models"]["fp32"]["parity"]["max_abs_diff"] == 0.0  # the file itself, relabelled to opset 13
    for bundle in ("export-x86-cpu", "export-jetson-nano"):
        code, out, err = run_cli("verify", run / bundle)
        assert code == 0 and "golden outputs reproduced" in out, err
    code, _, err = run_cli("bench", run, "--target", "x86-cpu", "--batch", "1,4", "--repeats", "3", "--warmup", "1",
                           "--no-memory")
    assert code == 0, err
    bench = json.loads((run / "bench.json").read_text())
    assert {r["runtime"] for r in bench["results"]} == {"ort-cpu"}
    assert bench["skipped_runtimes"]["torch-cpu"] == "the run's model is an ONNX file"
    code, _, err = run_cli("compress", "--model", run, "--out", tmp_path / "c", "-q")
    assert code == 2 and "imported ONNX file" in err and not (tmp_path / "c").exists()


def test_int8_is_quantized_from_the_given_graph(onnx_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(onnx_run.path, run)
    code, _, err = run_cli("export", run, "--target", "x86-cpu", "--int8", "-q")
    assert code == 0, err
    manifest = json.loads((run / "export-x86-cpu" / "manifest.json").read_text())
    assert set(manifest["models"]) == {"fp32", "int8"}
    int8 = onnx.load(str(run / "export-x86-cpu" / manifest["models"]["int8"]["file"]))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in int8.graph.node}
    code, out, err = run_cli("verify", run / "export-x86-cpu")
    assert code == 0 and "golden outputs reproduced" in out, err


def test_the_certification_engine_reads_an_imported_onnx_run(onnx_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(onnx_run.path, run)
    code, _, err = run_cli("export", run, "--target", "x86-cpu", "-q")
    assert code == 0, err
    code, _, err = run_cli("certify", run, "--n", "6", "--eps", "0,0.5", "--no-radius")
    assert code == 0, err
    doc = json.loads((run / "certificates.json").read_text())
    real = {row["eps"]: row["certified_accuracy"] for row in doc["artifacts"][0]["rows"] if row["arithmetic"] == "real"}
    assert doc["artifacts"][0]["precision"] == "fp32" and doc["n"] == 6
    assert real[0.0] == doc["clean_accuracy"]  # at ε = 0 the bounds are the graph's own outputs
    assert real[0.5] <= real[0.0]


@pytest.mark.ssh
def test_device_replay_of_an_onnx_run_on_the_loopback_test_bed(onnx_run, device_python, ssh_bed, tmp_path):
    import shutil

    from edgerobust.config import DeviceConfig
    from edgerobust.remote.api import device_replay

    shutil.copytree(onnx_run.path, tmp_path / "run")
    code, _, err = run_cli("export", tmp_path / "run", "--target", "x86-cpu", "-q")
    assert code == 0, err
    options = DeviceConfig(host=ssh_bed.alias, python=str(device_python), root=str(tmp_path / "ssh-device"),
                           ssh_config=str(ssh_bed.config), target="x86-cpu", name="edge-a")
    doc = device_replay(RunDir.open(tmp_path / "run"), options)
    assert doc["device"]["transport"] == "ssh"
    clean = doc["rows"][0]["sets"]["clean"]
    assert doc["rows"][0]["precision"] == "fp32" and clean["gap"] == 0.0 and clean["count"] == 6


def test_normalised_inputs_are_prepended_as_mean_and_std(folder, tmp_path):
    path = torch_onnx(foreign_net(), tmp_path / "f.onnx")
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.5, 0.125]
    run = import_onnx(tmp_path / "r", path, ImportSetup(data="imagefolder", data_root=folder,
                                                   model_options={"mean": mean, "std": std}))
    x = np.random.default_rng(0).random((1, 3, 10, 10), dtype=np.float32)
    normalised = (x - np.array(mean, np.float32).reshape(1, 3, 1, 1)) / np.array(std, np.float32).reshape(1, 3, 1, 1)
    assert np.array_equal(run.load_model()(torch.from_numpy(x)).numpy(), original(path, normalised))
    assert run.manifest["model"]["source"]["normalisation_added"]


def test_a_converter_is_used_only_when_it_matches_onnxruntime(onnx_run, tmp_path, monkeypatch):
    """onnx2torch is not installable beside this torch; a stand-in module checks the recording and parity logic."""
    from edgerobust.models.onnx_model import conversion_status

    net = foreign_net()
    stub = types.ModuleType("onnx2torch")
    stub.convert = lambda path: net
    monkeypatch.setitem(sys.modules, "onnx2torch", stub)
    monkeypatch.setattr("importlib.metadata.version", lambda name: "0.0-test")
    path = onnx_run.file("model.onnx")
    good = conversion_status(path, "input", "logits", (3, 10, 10))
    assert good["available"] and good["max_abs_diff"] <= good["tolerance"]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # a converter that got the weights wrong
    stub.convert = lambda path: net
    bad = conversion_status(path, "input", "logits", (3, 10, 10))
    assert not bad["available"] and "differs from onnxruntime" in bad["reason"]


def test_a_converted_run_loads_as_pytorch(onnx_run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(onnx_run.path, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "model.json").read_text())
    manifest["model"]["source"]["torch_conversion"] = {"available": True}
    (tmp_path / "run" / "model.json").write_text(json.dumps(manifest))
    stub = types.ModuleType("onnx2torch")
    net = foreign_net()
    stub.convert = lambda path: net
    monkeypatch.setitem(sys.modules, "onnx2torch", stub)
    assert RunDir.open(tmp_path / "run").load_model() is net
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # the converter went away: the graph still runs
    assert isinstance(RunDir.open(tmp_path / "run").load_model(), OnnxClassifier)


def graph(inputs, outputs, nodes, initializers=(), opset=17, domains=()):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", opset), *domains])
    return model


def save(tmp_path, model, name="bad.onnx"):
    onnx.save_model(model, str(tmp_path / name))
    return tmp_path / name


def image(name="x", dims=(1, 3, 4, 4), kind=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, kind, list(dims))


FLAT = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("ReduceMax", ["f"], ["y"], keepdims=1)]


@pytest.mark.parametrize("make,expected", [
    (lambda: graph([image(), image("z")], [image("y", (1, 3))], [helper.make_node("Add", ["x", "z"], ["s"]),
                                                                   helper.make_node("Flatten", ["s"], ["y"])]),
     "has 2 inputs (x, z)"),
    (lambda: graph([image(dims=(1, 48))], [image("y", (1, 48))], [helper.make_node("Relu", ["x"], ["y"])]),
     "an image classifier takes float N×C×H×W"),
    (lambda: graph([image(kind=TensorProto.INT64)], [image("y", (1, 48), TensorProto.INT64)],
                   [helper.make_node("Flatten", ["x"], ["y"])]), "input 'x' is int64"),
    (lambda: graph([image(dims=("n", 3, "h", "w"))], [image("y", ("n", 1))], FLAT), "dynamic axes"),
    (lambda: graph([image()], [image("y", (1, 3, 4, 4))], [helper.make_node("Relu", ["x"], ["y"])]),
     "returns N×classes logits"),
    (lambda: graph([image()], [image("y", (1, 48))], [helper.make_node("Frobnicate", ["x"], ["y"], domain="acme")],
                   domains=[helper.make_opsetid("acme", 1)]), "onnxruntime cannot open"),
    (lambda: graph([image()], [image("y", (1, 48))], [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 48])]), "dynamic batch"),
    (lambda: b"\x08\x07garbage", "not a valid ONNX model"),
], ids=["two-inputs", "not-an-image", "integer-input", "unfixable-dynamic-shape", "not-logits",
        "unsupported-operator", "fixed-batch-reshape", "corrupt"])
def test_bad_onnx_files_are_one_line_and_leave_nothing(tmp_path, make, expected):
    made = make()
    if isinstance(made, bytes):
        (tmp_path / "bad.onnx").write_bytes(made)
    path = tmp_path / "bad.onnx" if isinstance(made, bytes) else save(tmp_path, made)
    with pytest.raises(OnnxImportError) as info:
        import_onnx(tmp_path / "r", path)
    assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert not (tmp_path / "r").exists()


def test_an_onnx_graph_without_data_needs_no_shape_when_it_is_fixed(tmp_path):
    path = torch_onnx(foreign_net(), tmp_path / "f.onnx")
    run = import_onnx(tmp_path / "r", path)
    assert run.input_shape == (3, 10, 10) and "test_accuracy" not in run.manifest["metrics"]
    code, _, err = run_cli("import", path, "--model", "scnn2", "--out", tmp_path / "r2")
    assert code == 2 and "an ONNX file is the whole model" in err
