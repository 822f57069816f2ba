"""The optimisers an artifact asks onnxruntime sessions to skip (runner/ort_options.py): read from the artifact's own
metadata by the runner's and the host's sessions, refused by name when outside the layout passes."""
from __future__ import annotations

import platform

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edgerobust.errors import EdgeRobustError
from edgerobust.runner.errors import RunnerError
from edgerobust.runner.ort_options import DISABLED_KEY, SkipRefused, open_session, parse_disabled, session_options


def conv_net(skip: str | None) -> onnx.ModelProto:
    """Two 3×3 convolutions of 16 channels (the NCHWc pass takes them on x86), the skip request in the metadata."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, c, 3, 3)).astype(np.float32), f"w{i}")
             for i, c in enumerate((3, 16))]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["logits"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                                         [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if skip is not None:
        model.metadata_props.add(key=DISABLED_KEY, value=skip)
    return model


def optimised_domains(model: onnx.ModelProto, skip: list[str], tmp_path) -> set[str]:
    options = session_options(ort, 1)
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=skip)
    return {n.domain for n in onnx.load(options.optimized_model_filepath).graph.node}


def test_an_artifact_that_asks_runs_without_the_layout_pass_and_computes_the_same(tmp_path):
    asked, plain = conv_net("NchwcTransformer"), conv_net(None)
    session, skipped = open_session(ort, asked.SerializeToString(), 1, ["CPUExecutionProvider"])
    reference, none = open_session(ort, plain.SerializeToString(), 1, ["CPUExecutionProvider"])
    assert skipped == ["NchwcTransformer"] and none == []
    assert "com.microsoft.nchwc" not in optimised_domains(asked, skipped, tmp_path)
    if platform.machine().lower() in ("x86_64", "amd64"):  # MLAS's blocked kernels exist on x86 only
        assert "com.microsoft.nchwc" in optimised_domains(plain, [], tmp_path)
    x = np.random.default_rng(1).random((4, 3, 8, 8), dtype=np.float32)
    a, b = (s.run(None, {"input": x})[0].astype(np.float64) for s in (session, reference))
    # the same products summed in another order: |Σ| error ≤ γ_n·Σ|terms| twice, n = 144 terms, plus the Relu input
    w = [numpy_helper.to_array(i).astype(np.float64) for i in asked.graph.initializer]
    bound = 2 * 2 * 145 * 2.0 ** -24 * (np.abs(w[1]).sum((1, 2, 3)).max() * np.abs(w[0]).sum((1, 2, 3)).max())
    assert np.abs(a - b).max() <= bound


@pytest.mark.parametrize("text, names", [("", []), (None, []), ("NchwcTransformer", ["NchwcTransformer"]),
                                         (" NchwcTransformer ,", ["NchwcTransformer"])])
def test_the_skip_request_is_read_by_name(text, names):
    assert parse_disabled(text) == names


def test_a_request_to_skip_another_optimiser_is_refused_in_one_line_on_the_runner_and_the_host(tmp_path):
    """Only layout passes may be skipped: an artifact asking to leave out, say, constant folding is refused by the
    runner (bundle_invalid) and by the host's bench session, naming the optimiser."""
    from edgerobust.bench.runtimes import OrtSession as HostSession
    from edgerobust.runner.runtimes import OrtSession as RunnerSession

    path = tmp_path / "model.onnx"
    onnx.save(conv_net("NchwcTransformer,ConstantFolding"), str(path))
    with pytest.raises(SkipRefused, match="ConstantFolding"):
        open_session(ort, str(path), 1, ["CPUExecutionProvider"])

    class Options:
        runtime, threads = "ort-cpu", 1

    with pytest.raises(RunnerError, match="skip ConstantFolding") as info:
        RunnerSession(str(path), "0" * 64, "fp32", Options())
    assert info.value.kind == "bundle_invalid" and "\n" not in str(info.value)
    with pytest.raises(EdgeRobustError, match="skip ConstantFolding") as info:
        HostSession(path, ["CPUExecutionProvider"], 1, "ort-cpu", "cpu")
    assert "\n" not in str(info.value)


def test_the_runner_and_the_host_report_the_skipped_pass(tmp_path):
    from edgerobust.bench.runtimes import OrtSession as HostSession
    from edgerobust.runner.runtimes import OrtSession as RunnerSession

    path = tmp_path / "model.onnx"
    onnx.save(conv_net("NchwcTransformer"), str(path))

    class Options:
        runtime, threads = "ort-cpu", 1

    assert RunnerSession(str(path), "0" * 64, "fp32", Options()).describe(4)["disabled_optimizers"] == [
        "NchwcTransformer"]
    assert HostSession(path, ["CPUExecutionProvider"], 1, "ort-cpu", "cpu").disabled_optimizers == ["NchwcTransformer"]


def test_a_gpu_provider_keeps_its_one_session_whatever_the_artifact_asks():
    """The layout passes are the CPU kernels': a GPU provider's session (whose engines cost a build each) is opened
    once and skips nothing, while the CPU provider's is reopened without the pass."""

    class Session:
        def __init__(self, path, sess_options=None, providers=None, disabled_optimizers=None):
            opened.append((providers, disabled_optimizers))

        def get_modelmeta(self):
            return type("Meta", (), {"custom_metadata_map": {DISABLED_KEY: "NchwcTransformer"}})()

    fake = type("Ort", (), {"InferenceSession": Session, "SessionOptions": lambda: type("O", (), {})(),
                            "ExecutionMode": ort.ExecutionMode, "GraphOptimizationLevel": ort.GraphOptimizationLevel})
    opened: list = []
    assert open_session(fake, "m.onnx", 1, [("TensorrtExecutionProvider", {}), "CPUExecutionProvider"])[1] == []
    assert opened == [([("TensorrtExecutionProvider", {}), "CPUExecutionProvider"], None)]
    opened.clear()
    assert open_session(fake, "m.onnx", 1, ["CPUExecutionProvider"])[1] == ["NchwcTransformer"]
    assert opened == [(["CPUExecutionProvider"], None), (["CPUExecutionProvider"], ["NchwcTransformer"])]
