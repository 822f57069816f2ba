"""onnxruntime int8 for CPU targets: the quantizer's graph, the profile's [int8] table, the agreement rule on host and
runner, left-out artifacts and the bad inputs."""
import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgerobust.config import BenchConfig, DeviceConfig, EvaluateConfig, ExportConfig
from edgerobust.errors import EdgeRobustError, ShapeError


@pytest.fixture(scope="module")
def int8_bundle(digits_run, tmp_path_factory):
    from edgerobust.export.api import export_run
    from edgerobust.run import RunDir

    root = tmp_path_factory.mktemp("int8")
    run = RunDir.open(shutil.copytree(digits_run.path, root / "run"))
    return export_run(run, ExportConfig(target="x86-cpu", calibration=64, golden=32, parity_points=200),
                      progress=False)


def initializers(proto):
    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}


def weight_dequantizers(proto):
    """(quantized weight, scale, zero point, axis) of every DequantizeLinear fed by an int8 initializer."""
    inits = initializers(proto)
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dtype == np.int8:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            yield inits[node.input[0]], inits[node.input[1]], inits[node.input[2]], axis


def test_x86_export_holds_a_qdq_int8_graph_judged_by_agreement(int8_bundle):
    manifest = int8_bundle.manifest
    assert manifest["precisions"] == ["fp32", "int8"]
    entry = manifest["models"]["int8"]
    assert entry["file"] == "model.int8.onnx" and entry["runtimes"] == ["ort-cpu"]
    assert "golden_tolerance" not in entry  # the agreement rule, never a derived elementwise bound
    parity = entry["parity"]
    assert parity["passed"] and parity["tolerance_kind"] == "agreement" and parity["max_accuracy_drop"] == 0.01
    assert parity["points"] == 200 and parity["golden"]["points"] == 32
    assert parity["accuracy_drop"] == pytest.approx(parity["reference_accuracy"] - parity["accuracy"])
    assert entry["quantization"]["method"] == "minmax" and entry["quantization"]["reduce_range"] is False
    proto = onnx.load(str(int8_bundle.bundle / entry["file"]))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = list(weight_dequantizers(proto))
    assert weights
    for q, scale, zero, axis in weights:
        if q.ndim == 4:  # convolution weights: one scale per output channel, symmetric (zero point 0)
            assert scale.shape == (q.shape[axis],) and not zero.any()
    activations = [initializers(proto)[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert activations and all(z.dtype == np.uint8 for z in activations)


def test_host_and_runner_verify_apply_the_agreement_rule(int8_bundle, tmp_path):
    from runner_helpers import copy_bundle, reseal, run_runner

    from edgerobust.export.bundle import BundleError, verify_bundle

    checked = verify_bundle(int8_bundle.bundle, run_golden=True)["golden"]
    assert checked["int8"]["passed"] and checked["int8"]["top1_agreement"] >= 0.9
    code, doc = run_runner("verify", "--bundle", int8_bundle.bundle, "--runtime", "ort-cpu")
    assert code == 0, doc
    figures = doc["result"]["golden"]["int8"]
    assert figures["tolerance_kind"] == "agreement" and figures["ok"]
    assert figures["accuracy"] == checked["int8"]["accuracy"]  # one rule, the same figures on both sides

    strict = copy_bundle(int8_bundle.bundle, tmp_path)  # a limit no int8 graph meets: both sides refuse it
    reseal(strict, lambda m: m["models"]["int8"]["parity"].update(min_top1_agreement=1.01))
    with pytest.raises(BundleError, match="no longer agrees"):
        verify_bundle(strict, run_golden=True)
    code, doc = run_runner("verify", "--bundle", strict, "--runtime", "ort-cpu")
    assert code == 2 and doc["error"]["kind"] == "parity_failed"


def test_quantize_int8_is_a_bare_quantize_static_with_the_same_settings(int8_bundle, tmp_path):
    """edgerobust adds nothing to onnxruntime's quantizer: a bare call gives the same graph's outputs, bit for bit."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgerobust.export.parity import ort_session, run_onnx
    from edgerobust.export.quantize import Int8Settings, _reader, quantize_int8

    source = int8_bundle.bundle / "model.onnx"
    calibration = np.load(int8_bundle.bundle / "calibration.npz")["input"]
    ours = quantize_int8(onnx.load(str(source)), calibration, calibration.shape[1:], Int8Settings())
    quant_pre_process(str(source), str(tmp_path / "prepared.onnx"))
    quantize_static(str(tmp_path / "prepared.onnx"), str(tmp_path / "bare.onnx"), _reader(calibration),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    onnx.save(ours, str(tmp_path / "ours.onnx"))
    x = np.load(int8_bundle.bundle / "golden_inputs.npy")
    a = run_onnx(ort_session(tmp_path / "ours.onnx"), x)
    b = run_onnx(ort_session(tmp_path / "bare.onnx"), x)
    assert np.array_equal(a, b)
    assert np.array_equal(run_onnx(ort_session(int8_bundle.bundle / "model.int8.onnx"), x), a)


def test_calibration_method_and_reduce_range_reach_the_quantizer(int8_bundle):
    from edgerobust.export.quantize import Int8Settings, quantize_int8

    proto = onnx.load(str(int8_bundle.bundle / "model.onnx"))
    calibration = np.load(int8_bundle.bundle / "calibration.npz")["input"]
    shape = calibration.shape[1:]

    def activation_scales(settings):
        graph = quantize_int8(proto, calibration, shape, settings)
        inits = initializers(graph)
        return [float(inits[n.input[1]]) for n in graph.graph.node if n.op_type == "QuantizeLinear"], graph

    minmax, _ = activation_scales(Int8Settings("minmax"))
    percentile, _ = activation_scales(Int8Settings("percentile"))
    assert minmax != percentile  # the method changes the calibrated ranges
    _, reduced = activation_scales(Int8Settings("minmax", reduce_range=True))
    assert max(int(np.abs(q.astype(int)).max()) for q, *_ in weight_dequantizers(reduced)) == 64  # 7-bit weights
    assert max(int(np.abs(q.astype(int)).max()) for q, *_ in weight_dequantizers(onnx.load(
        str(int8_bundle.bundle / "model.int8.onnx")))) == 127  # full range without it


def test_bad_calibration_sets_and_unquantizable_graphs_are_one_line():
    from edgerobust.export.quantize import QuantizationError, quantize_int8

    node = helper.make_node("Relu", ["input"], ["output"])
    graph = helper.make_graph([node], "relu", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                                             ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 1, 4, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ShapeError, match="empty"):
        quantize_int8(proto, np.zeros((0, 1, 4, 4), np.float32), (1, 4, 4))
    with pytest.raises(ShapeError, match=r"shape \(3, 4, 4\) but the model takes \(1, 4, 4\)"):
        quantize_int8(proto, np.zeros((2, 3, 4, 4), np.float32), (1, 4, 4))
    with pytest.raises(QuantizationError, match="Relu"):
        quantize_int8(proto, np.random.default_rng(0).random((4, 1, 4, 4), np.float32), (1, 4, 4))


def test_a_quantizer_failure_names_the_operator(monkeypatch, int8_bundle):
    """onnxruntime's quantizer raising inside a node: the error line names that node's operator."""
    import onnxruntime.quantization as quantization

    from edgerobust.export.quantize import QuantizationError, quantize_int8

    proto = onnx.load(str(int8_bundle.bundle / "model.onnx"))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")

    def fail(*args, **kwargs):
        raise ValueError(f"cannot quantize input of node {conv.name}")

    monkeypatch.setattr(quantization, "quantize_static", fail)
    calibration = np.load(int8_bundle.bundle / "calibration.npz")["input"]
    with pytest.raises(QuantizationError, match=f"operator Conv \\(node {conv.name}\\)"):
        quantize_int8(proto, calibration, calibration.shape[1:])


def test_an_artifact_over_the_tolerance_is_left_out_or_forced(digits_run, tmp_path):
    from edgerobust.export.api import export_run
    from edgerobust.export.bundle import verify_bundle
    from edgerobust.run import RunDir

    run = RunDir.open(shutil.copytree(digits_run.path, tmp_path / "run"))
    strict = ExportConfig(target="x86-cpu", calibration=1, golden=16, int8_max_drop=0.0, int8_min_agreement=1.0)
    result = export_run(run, strict, out=tmp_path / "a", progress=False)
    assert result.manifest["precisions"] == ["fp32"] and "int8" not in result.manifest["models"]
    left = result.manifest["left_out"]["int8"]
    assert "against fp32" in left["reason"] and not left["parity"]["passed"]
    assert not (tmp_path / "a" / "model.int8.onnx").exists()
    verify_bundle(tmp_path / "a", run_golden=True)  # the rest of the bundle is whole
    with pytest.raises(EdgeRobustError, match="accuracy .* against fp32 .*not written"):
        export_run(run, replace(strict, int8=True), out=tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()
    forced = export_run(run, replace(strict, force_int8=True), out=tmp_path / "c", progress=False)
    assert forced.manifest["models"]["int8"]["parity"]["forced"] is True


def test_profile_int8_table_is_validated():
    from edgerobust.devices import load_profile
    from edgerobust.devices.profile import ProfileError, profile_from_dict

    x86 = load_profile("x86-cpu")
    assert x86.int8_runtime == "ort" and x86.int8 == {"runtime": "ort", "reduce_range": False, "method": "minmax"}
    assert load_profile("jetson-nano-cpu").int8_runtime == "ort"
    assert load_profile("jetson-orin-nano").int8_runtime == "tensorrt"
    assert load_profile("jetson-nano").int8_runtime is None
    base = {k: v for k, v in x86.to_dict().items() if v is not None and k not in ("source", "memory_budget_bytes",
                                                                                "int8", "latency_budget_ms")}
    base.update(memory_budget="4 GiB")
    bad = [({"int8": {"runtime": "ort"}, "precisions": ["fp32"]}, "lists no int8"),
           ({"int8": {"runtime": "openvino"}}, "unknown value 'openvino'"),
           ({"int8": {"runtime": "tensorrt"}}, "builds GPU engines"),
           ({"int8": {"method": "mse"}}, "unknown value 'mse'"),
           ({"int8": {"reduce_range": "yes"}}, "must be bool"),
           ({"int8": {"rounding": "even"}}, "not an int8 setting"),
           ({"runtimes": ["torch-cpu"]}, "needs a runtime that runs int8")]
    for change, message in bad:
        with pytest.raises(ProfileError, match=message):
            profile_from_dict({**base, **change}, "p.toml")
    assert profile_from_dict({**base, "int8": {"reduce_range": True}}, "p.toml").int8["reduce_range"] is True


def test_int8_refused_where_the_target_has_none_and_without_calibration(digits_run, tmp_path):
    from edgerobust.export.api import export_run
    from edgerobust.run import RunDir

    run = RunDir.open(shutil.copytree(digits_run.path, tmp_path / "run"))
    with pytest.raises(EdgeRobustError, match="does not support int8"):
        export_run(run, ExportConfig(target="jetson-nano", int8=True), progress=False)
    with pytest.raises(EdgeRobustError, match="needs a calibration set"):
        export_run(run, ExportConfig(target="x86-cpu", int8=True, calibration=0), progress=False)
    result = export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=8),  # int8 by default: left out
                        progress=False)
    assert result.manifest["precisions"] == ["fp32"] and "calibration" in result.manifest["left_out"]["int8"][
        "reason"]
    assert json.loads((result.bundle / "manifest.json").read_text())["left_out"]


@pytest.fixture(scope="module")
def int8_replay_run(digits_run, tmp_path_factory):
    """The digits run with one PGD set, exported for x86-cpu (fp32 + int8): what the device replays."""
    from runner_helpers import run_with_replay_set

    from edgerobust.export.api import export_run

    run = run_with_replay_set(digits_run, tmp_path_factory.mktemp("int8-replay"), 40)
    export_run(run, ExportConfig(target="x86-cpu", calibration=64, golden=32, parity_points=200), progress=False)
    return run


def test_bench_shows_int8_rows_beside_fp32_in_one_call(int8_replay_run):
    from edgerobust.bench.api import bench_precisions, bench_run
    from edgerobust.io import read_json

    quick = BenchConfig(target="x86-cpu", runtimes=["ort-cpu"], batches=[1, 4], repeats=3, warmup=1, threads=1,
                        memory=False)
    record = bench_run(int8_replay_run, replace(quick, precisions=["fp32", "int8"]), progress=False)
    assert record["precisions"] == ["fp32", "int8"]
    assert [(r["precision"], r["batch"]) for r in record["results"]] == [("fp32", 1), ("fp32", 4), ("int8", 1),
                                                                          ("int8", 4)]
    assert record["parity_by_precision"]["int8"]["ort-cpu"]["top1_agreement"] >= 0.9
    on_disk = read_json(int8_replay_run.path / "bench.json")
    assert on_disk["precisions"] == ["fp32", "int8"]
    assert set(int8_replay_run.manifest["bench"]["p50_ms"]) == {"ort-cpu:fp32@1", "ort-cpu:fp32@4",
                                                               "ort-cpu:int8@1", "ort-cpu:int8@4"}
    with pytest.raises(EdgeRobustError, match="cannot run int8"):
        bench_precisions(int8_replay_run, replace(quick, runtimes=["torch-cpu"], precision="int8"), progress=False,
                         write=False)


def test_device_bench_and_replay_cover_int8_with_per_point_divergence(int8_replay_run, tmp_path):
    import sys

    from edgerobust.remote.api import device_bench, device_replay

    options = DeviceConfig(host=f"local:{sys.executable}", root=str(tmp_path / "device"), target="x86-cpu",
                           threads=1, name="here")
    bench = device_bench(int8_replay_run, replace(options, precisions=["int8"], batches=[1], warmup=1, repeats=3,
                                                  max_cv=1e9))
    assert [r["record"]["precision"] for r in bench["rows"]] == ["int8"] and bench["rows"][0]["compute"]["n"] == 3
    replay = device_replay(int8_replay_run, options)
    rows = {r["precision"]: r for r in replay["rows"]}
    assert list(rows) == ["fp32", "int8"]  # every precision the bundle holds
    for key, figures in rows["int8"]["sets"].items():
        predictions = np.asarray(figures["predictions"])
        reference = np.asarray(rows["fp32"]["sets"][key]["predictions"])
        assert len(predictions) == figures["count"]
        assert figures["diverge_from_reference"] == int((predictions != reference).sum())
    assert set(rows["int8"]["sets"]) == {"clean", "pgd-0.1"}
    from edgerobust.report import render_report

    text = render_report(int8_replay_run).read_text()
    shown = [line for line in text.splitlines() if line.startswith("| here | int8 |")]
    assert "≠ fp32" in text and len(shown) == 2
    assert sorted(int(line.rstrip(" |").rsplit("|", 1)[1]) for line in shown) == \
        sorted(f["diverge_from_reference"] for f in rows["int8"]["sets"].values())


def test_evaluate_artifact_per_precision_transfer_square_and_divergence(int8_replay_run, tmp_path):
    import torch
    from runner_helpers import copy_bundle

    from edgerobust.evaluation.artifact import OrtClassifier, evaluate_artifacts
    from edgerobust.io import read_json
    from edgerobust.report import render_report

    run = run_copy(int8_replay_run, tmp_path)
    bundle = run.path / "export-x86-cpu"
    config = EvaluateConfig(square_queries=20, seed=0, steps=5, masking_steps=1)
    result = evaluate_artifacts(run, config, bundle=bundle)  # at the saved set's ε, 0.1
    assert set(result["precisions"]) == {"fp32", "int8"}
    assert result["sources"] == ["transfer:pgd-0.1", "square", "gradient:apgd-ce"]
    with np.load(run.path / "adversarial" / "pgd-0.1.npz") as data:
        x_adv, labels = data["x_adv"], data["labels"]
    for row in result["precisions"].values():
        model = OrtClassifier(bundle / row["file"])

        transfer = model(torch.from_numpy(x_adv)).argmax(1).numpy()  # the artifact's own outputs, replayed
        assert row["points"]["transfer:pgd-0.1"] == transfer.tolist()
        points = {k: np.asarray(v) for k, v in row["points"].items()}
        robust = (points["clean"] == labels) & (transfer == labels) & (points["square"] == labels) & \
            (points["gradient:apgd-ce"] == labels)
        assert row["points"]["robust"] == robust.astype(int).tolist()  # the minimum over sources
        assert row["robust_accuracy"] == robust.mean() <= min(row["robust_by_source"].values())
        gradient_left = (points["clean"] == labels) & (points["gradient:apgd-ce"] == labels)
        square_only = np.mean(gradient_left & (points["square"] != labels))  # broken by the query attack alone
        checks = {c["check"].split(" ")[1]: c for c in row["masking"]}
        assert set(checks) == {"very", "attack", "query"}
        assert (checks["query"]["status"] == "FAIL") == (square_only > 0.002)
        assert row["masking_failed"] == any(c["status"] == "FAIL" for c in row["masking"])
    divergence = result["precisions"]["int8"]["divergence"]
    assert divergence["clean"] == int(np.sum(np.asarray(result["precisions"]["fp32"]["points"]["clean"]) !=
                                             np.asarray(result["precisions"]["int8"]["points"]["clean"])))
    assert read_json(run.path / "precision_robustness.json")["precisions"]["int8"]["robust_accuracy"] == \
        result["precisions"]["int8"]["robust_accuracy"]
    text = render_report(run).read_text()
    assert "## Robustness per precision" in text and "| int8 |" in text and "certified (" not in text
    from edgerobust.certify.api import certify_bundle

    certify_bundle(bundle, [0.01], method="ibp", n=2, radius=False, run=run)  # fp32 and int8 certified
    table = render_report(run).read_text().split("## Robustness per precision")[1]
    assert "certified (ibp fp32 ε=0.01)" in table and "certified (ibp int8 ε=0.01)" in table
    assert "not certified" not in table
    tampered = copy_bundle(bundle, tmp_path / "tampered")
    (tampered / "model.int8.onnx").write_bytes(b"not a model")
    with pytest.raises(EdgeRobustError, match="modified"):
        evaluate_artifacts(run, EvaluateConfig(square_queries=1, artifact=str(tampered)))


def run_copy(run, tmp_path):
    from edgerobust.run import RunDir

    return RunDir.open(shutil.copytree(run.path, tmp_path / "run"))


def test_surrogate_fake_quantization_rounds_half_to_even_saturates_and_passes_gradients_straight_through(tmp_path):
    """QuantizeLinear -> DequantizeLinear with a power-of-two scale: onnxruntime and the surrogate agree exactly on
    ties and saturation; inside the range the gradient is 1 (straight through), outside it 0."""
    import onnxruntime as ort
    import torch

    from edgerobust.evaluation.surrogate import ArtifactSurrogate

    scale, zero = numpy_helper.from_array(np.array(0.25, np.float32), "s"), \
        numpy_helper.from_array(np.array(128, np.uint8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["output"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 8])],
                              [scale, zero])
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = (np.arange(-300, 300, dtype=np.float32) * 0.125).reshape(-1, 8)  # every tie k·s/2, beyond both ends
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    surrogate = ArtifactSurrogate(path)
    inputs = torch.from_numpy(x).requires_grad_()
    out = surrogate(inputs)
    assert np.array_equal(out.detach().numpy(), expected)
    assert np.array_equal(expected[x == 0.125], np.zeros(1, np.float32))  # 0.5 steps -> 0 (half to even)
    out.sum().backward()
    rounded = np.round(x / 0.25) + 128  # numpy rounds half to even too: inside = the rounded value not saturated
    inside = (rounded >= 0) & (rounded <= 255)
    assert 0 < inside.sum() < inside.size
    assert np.array_equal(inputs.grad.numpy(), inside.astype(np.float32))


def test_int8_surrogate_follows_the_artifact_and_has_gradients(int8_bundle):
    import torch

    from edgerobust.evaluation.artifact import OrtClassifier
    from edgerobust.evaluation.surrogate import ArtifactSurrogate

    path = int8_bundle.bundle / "model.int8.onnx"
    x = torch.from_numpy(np.load(int8_bundle.bundle / "golden_inputs.npy")).requires_grad_()
    logits = ArtifactSurrogate(path)(x)
    agree = (logits.argmax(1) == OrtClassifier(path)(x).argmax(1)).float().mean()
    assert agree >= int8_bundle.manifest["models"]["int8"]["parity"]["min_top1_agreement"]
    logits[:, 0].sum().backward()
    assert x.grad.abs().sum() > 0  # rounding alone has a zero gradient: the straight-through estimator is in place


def test_pipeline_precisions_step_judges_the_exported_artifacts_side_by_side(int8_replay_run, tmp_path):
    from edgerobust.pipeline.context import PipelineContext
    from edgerobust.pipeline.precision_steps import precisions_step

    run = run_copy(int8_replay_run, tmp_path)
    ctx = PipelineContext(out=tmp_path, recipe={"export": {"target": "x86"}, "evaluate": {"steps": 2,
                                                                                         "square_queries": 5}}, run=run)
    precisions_step(ctx)
    rows = {what: value for step, what, value in ctx.summary if step == "precisions"}
    recorded = run.manifest["precision_robustness"]
    assert rows["int8 clean accuracy"] == recorded["int8"]["clean"]
    assert rows["fp32 robust accuracy (min over 3 sources)"] == recorded["fp32"]["robust"]
    assert "int8 points differing from fp32 (clean / attacked)" in rows
    empty = PipelineContext(out=tmp_path, recipe={"export": {"target": "jetson-nano-cpu"}}, run=run)
    with pytest.raises(EdgeRobustError, match="needs the export step's bundle for jetson-nano-cpu"):
        precisions_step(empty)


@pytest.mark.parametrize("n, flips, max_drop, passed", [
    (64, 1, 0.01, True),  # one point of 64 is the smallest drop 64 points can show
    (64, 2, 0.01, False),
    (1000, 10, 0.01, True), (1000, 11, 0.01, False),
    (100, 29, 0.29, True), (100, 30, 0.29, False),  # 0.29 · 100 is 28.999… in binary: still 29 points
    (50, 1, 0.0, False), (50, 0, 0.0, True),  # a tolerance of 0 allows no drop at all
])
def test_the_agreement_rule_judges_the_drop_in_points_of_the_sample(n, flips, max_drop, passed):
    from edgerobust.runner.parity import agreement

    labels = np.arange(n) % 10
    reference = np.eye(10)[labels]  # every reference prediction correct
    outputs = reference.copy()
    outputs[:flips] = np.eye(10)[(labels[:flips] + 1) % 10]  # `flips` correct points turned wrong
    got = agreement(outputs, reference, labels, 0.0, max_drop)
    assert got["dropped_points"] == flips and got["passed"] is passed
    assert got["accuracy"] == (n - flips) / n and got["allowed_points"] == (max(1, round(max_drop * n)) if max_drop
                                                                            else 0)


def conv_graph(shapes: list[tuple[tuple[int, ...], int]]) -> onnx.ModelProto:
    """One Conv per (weight shape, group), side by side on their own inputs: only the weights' shapes matter."""
    nodes, inits, inputs = [], [], []
    for i, (shape, group) in enumerate(shapes):
        inits.append(numpy_helper.from_array(np.zeros(shape, np.float32), f"w{i}"))
        inputs.append(helper.make_tensor_value_info(f"x{i}", onnx.TensorProto.FLOAT, None))
        nodes.append(helper.make_node("Conv", [f"x{i}", f"w{i}"], [f"y{i}"], name=f"conv{i}", group=group))
    outputs = [helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None) for i in range(len(shapes))]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits))


def test_the_kernel_rule_names_the_convolutions_outside_the_symmetric_int8_kernel():
    from edgerobust.export.quantize import excluded_nodes, slow_int8_convolutions

    proto = conv_graph([((16, 3, 3, 3), 1),    # a CIFAR stem: 3 input channels
                        ((8, 8, 3, 3), 1),     # a filter-pruned layer of 8
                        ((16, 16, 3, 3), 1),   # fast
                        ((32, 12, 1, 1), 1),   # fast (1x1, 12 = 3·4 input channels)
                        ((20, 16, 3, 3), 1),   # 20 output channels: not a multiple of 8
                        ((16, 1, 3, 3), 16),   # depthwise over 16 channels: fast
                        ((8, 1, 3, 3), 8)])    # depthwise over 8: not a multiple of 16
    assert slow_int8_convolutions(proto) == ["conv0", "conv1", "conv4", "conv6"]
    assert excluded_nodes(proto, "auto") == slow_int8_convolutions(proto)
    assert excluded_nodes(proto, "none") == [] and excluded_nodes(proto, " conv2 ,conv3") == ["conv2", "conv3"]
    with pytest.raises(EdgeRobustError, match="names no node conv9 of the graph") as info:
        excluded_nodes(proto, "conv2,conv9")
    assert "\n" not in str(info.value)


def test_int8_exclude_leaves_operators_float32_records_them_and_reaches_the_bundle(int8_bundle, tmp_path):
    from edgerobust.export.api import export_run
    from edgerobust.export.parity import ort_session, run_onnx
    from edgerobust.export.quantize import Int8Settings, float_operators, quantize_int8, slow_int8_convolutions
    from edgerobust.run import RunDir

    proto = onnx.load(str(int8_bundle.bundle / "model.onnx"))
    calibration = np.load(int8_bundle.bundle / "calibration.npz")["input"]
    shape = calibration.shape[1:]
    slow = slow_int8_convolutions(proto)
    assert slow  # the digits model's first convolution reads 1 channel
    mixed = quantize_int8(proto, calibration, shape, Int8Settings(exclude="auto"))
    assert float_operators(mixed) == slow
    assert float_operators(onnx.load(str(int8_bundle.bundle / "model.int8.onnx"))) == []
    assert str(slow) in next(p.value for p in mixed.metadata_props if p.key == "int8")
    named = [n.name for n in proto.graph.node if n.op_type == "Conv"][-1]
    assert float_operators(quantize_int8(proto, calibration, shape, Int8Settings(exclude=named))) == [named]
    onnx.save(mixed, str(tmp_path / "mixed.onnx"))
    x = np.load(int8_bundle.bundle / "golden_inputs.npy")
    assert np.isfinite(run_onnx(ort_session(tmp_path / "mixed.onnx"), x)).all()

    run = RunDir.open(shutil.copytree(int8_bundle.bundle.parent, tmp_path / "run", ignore=shutil.ignore_patterns(
        "export-*")))
    result = export_run(run, ExportConfig(target="x86-cpu", calibration=64, golden=32, parity_points=200,
                                          int8_exclude="auto", force_int8=True), progress=False)
    entry = result.manifest["models"]["int8"]
    assert entry["quantization"]["exclude"] == "auto" and entry["quantization"]["float_operators"] == slow


def test_int8_exclude_measure_keeps_the_fastest_graph_and_session_and_records_the_times(int8_bundle):
    """`measure` times the all-int8 and the mixed graph, each with and without onnxruntime's NCHWc layout pass, and
    keeps the fastest; a skipped pass is written in the artifact, and the runner's session reads it there."""
    import onnxruntime as ort

    from edgerobust.export.quantize import Int8Settings, float_operators, int8_record, quantize_int8
    from edgerobust.runner.ort_options import DISABLED_KEY, open_session

    proto = onnx.load(str(int8_bundle.bundle / "model.onnx"))
    calibration = np.load(int8_bundle.bundle / "calibration.npz")["input"]
    shape = calibration.shape[1:]
    graph = quantize_int8(proto, calibration, shape, Int8Settings(exclude="measure"))
    record = int8_record(graph)
    times = record["measured_fastest_call_ms"]
    assert set(times) == {"int8", "mixed", "int8/no-nchwc", "mixed/no-nchwc"}
    assert record["chosen"] == min(times, key=times.get)
    auto = float_operators(quantize_int8(proto, calibration, shape, Int8Settings(exclude="auto")))
    mixed = record["chosen"].startswith("mixed")
    assert record["float_operators"] == float_operators(graph) == (auto if mixed else [])
    skip = ["NchwcTransformer"] if record["chosen"].endswith("/no-nchwc") else []
    assert record["disabled_optimizers"] == skip
    assert [p.value for p in graph.metadata_props if p.key == DISABLED_KEY] == ([",".join(skip)] if skip else [])
    assert open_session(ort, graph.SerializeToString(), 1, ["CPUExecutionProvider"])[1] == skip


def test_export_cli_measure_says_what_it_chose_and_what_sessions_skip(int8_bundle, tmp_path):
    import json

    from cli_helpers import run_cli

    run = shutil.copytree(int8_bundle.bundle.parent, tmp_path / "run", ignore=shutil.ignore_patterns("export-*"))
    code, out, err = run_cli("export", run, "-t", "x86-cpu", "--int8", "--force-int8", "--int8-exclude", "measure")
    assert code == 0, err
    q = json.loads((run / "export-x86-cpu" / "manifest.json").read_text())["models"]["int8"]["quantization"]
    assert q["exclude"] == "measure" and q["chosen"] in q["measured_fastest_call_ms"]
    assert f"measured fastest: {q['chosen']}" in " ".join(out.split())
    assert ("sessions skip NchwcTransformer" in " ".join(out.split())) == bool(q["disabled_optimizers"])
