"""The one TensorRT builder (export/tensorrt_build.serialize_engine), which export's engines and bench's `tensorrt`
runtime share, driven through a stand-in `tensorrt` module that records what the builder asked of it (TensorRT
itself needs an NVIDIA GPU; the GPU tests build real engines)."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from edgerobust.errors import EdgeRobustError


def _fake_tensorrt(parses: bool = True, builds: bool = True):
    calls: dict = {"flags": [], "shapes": [], "workspace": None, "calibrator": None}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0-stand-in"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Tensor:
        def __init__(self, name):
            self.name = name

    class Network:
        def get_input(self, i):
            return Tensor("input")

        def get_output(self, i):
            return Tensor("logits")

    class Profile:
        def set_shape(self, name, *shapes):
            calls["shapes"].append((name, shapes))

    class Config:
        int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def add_optimization_profile(self, profile):
            calls["profile"] = profile

        def set_flag(self, flag):
            calls["flags"].append(flag)

        def set_calibration_profile(self, profile):
            calls["calibration_profile"] = profile

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["calibrator"] = config.int8_calibrator
            return b"plan" if builds else None

    class OnnxParser:
        num_errors = 1

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            return parses

        def get_error(self, i):
            return "unsupported node Foo"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()  # TensorRT 10: explicit batch is the only mode
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
    return trt, calls


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"graph")
    return path


@pytest.mark.parametrize("precision, flags", [("fp32", []), ("fp16", ["FP16"])])
def test_one_builder_sets_the_precision_and_the_batch_range(monkeypatch, onnx_file, precision, flags):
    from edgerobust.export.tensorrt_build import serialize_engine

    trt, calls = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    module, plan, input_name, output_name = serialize_engine(onnx_file, (1, 8, 8), precision, max_batch=16)
    assert module is trt and plan == b"plan" and (input_name, output_name) == ("input", "logits")
    assert calls["flags"] == flags and calls["network_flags"] == 0 and calls["workspace"] == 1 << 30
    assert calls["shapes"] == [("input", ((1, 1, 8, 8), (16, 1, 8, 8), (16, 1, 8, 8)))]


def test_int8_needs_a_calibration_batch_and_uses_it(monkeypatch, onnx_file, tmp_path):
    from edgerobust.export import tensorrt_build

    trt, calls = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    # the real calibrator holds its batch on the GPU; record what it would be built from instead
    monkeypatch.setattr(tensorrt_build, "_calibrator", lambda trt, images, batch, cache: (len(images), batch, cache))
    with pytest.raises(EdgeRobustError, match="INT8 needs at least 4 calibration inputs"):
        tensorrt_build.serialize_engine(onnx_file, (1, 8, 8), "int8", 4, np.zeros((3, 1, 8, 8), np.float32))
    tensorrt_build.serialize_engine(onnx_file, (1, 8, 8), "int8", 4, np.zeros((8, 1, 8, 8), np.float32),
                                    calibration_cache=tmp_path / "model.calib")
    assert calls["flags"] == ["INT8"] and calls["calibrator"] == (8, 4, tmp_path / "model.calib")
    assert calls["calibration_profile"] is calls["profile"]


def test_parse_and_build_failures_are_one_line(monkeypatch, onnx_file):
    from edgerobust.export.tensorrt_build import serialize_engine

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(parses=False)[0])
    with pytest.raises(EdgeRobustError, match="cannot parse model.onnx: unsupported node Foo"):
        serialize_engine(onnx_file, (1, 8, 8), "fp32", 1)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(builds=False)[0])
    with pytest.raises(EdgeRobustError, match="could not build a fp32 engine"):
        serialize_engine(onnx_file, (1, 8, 8), "fp32", 1)


def test_export_and_bench_build_through_it(monkeypatch, onnx_file, tmp_path):
    """export's build_engine writes the plan serialize_engine returns; bench's session asks the same function."""
    import inspect

    from edgerobust.bench.runtimes import TensorRTSession
    from edgerobust.devices import load_profile
    from edgerobust.export import tensorrt_build

    trt, _ = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    profile = load_profile("a100")
    monkeypatch.setattr(tensorrt_build, "local_compute_capability", lambda: profile.compute_capability)
    record = tensorrt_build.build_engine(onnx_file, tmp_path / "model.fp16.engine", profile, "fp16", (3, 8, 8))
    assert (tmp_path / "model.fp16.engine").read_bytes() == b"plan" and record["tensorrt"] == trt.__version__
    assert "serialize_engine(" in inspect.getsource(TensorRTSession.__init__)
