"""TensorRT engine building (fp32 / fp16 / int8 with the bundle's calibration set), on the machine that runs it.

An engine is specific to the GPU, the TensorRT version and the build flags, so it is only built when the local
GPU is the target's (same compute capability) and is never shipped to another device. `serialize_engine` is the one
builder: `build_engine` writes its plan into an export bundle, and bench's `tensorrt` runtime loads it in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..devices import DeviceProfile
from ..errors import EdgeRobustError
from ..io import write_bytes
from ..runner.precisions import PRECISIONS

# (no square brackets: the CLI prints errors as rich markup, which would swallow "[tensorrt]")
INSTALL_HINT = ("install edgerobust's `tensorrt` extra on the device that will run the engine (`pip install tensorrt`; "
                "on a Jetson, JetPack's python3-libnvinfer)")


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise EdgeRobustError(f"TensorRT is not installed on this machine (`import tensorrt` failed); {INSTALL_HINT}, "
                              "or export without --engine and build the engine on the device") from None
    return tensorrt


def local_compute_capability() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def check_local_device(profile: DeviceProfile) -> None:
    if profile.accelerator != "gpu" or "tensorrt" not in profile.runtimes:
        raise EdgeRobustError(f"target '{profile.name}' has no TensorRT runtime; choose a GPU target such as "
                              "jetson-nano or a100")
    local = local_compute_capability()
    if local != profile.compute_capability:
        found = f"a GPU of compute capability {local}" if local else "no CUDA GPU"
        raise EdgeRobustError(f"TensorRT engines are built on the device that runs them: target '{profile.name}' "
                              f"needs compute capability {profile.compute_capability} but this machine has {found}; "
                              "copy the bundle to the device and build the engine there")


def _calibrator(trt, images: np.ndarray, batch: int, cache: Path):
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.index = 0
            self.device_batch = torch.empty((batch, *images.shape[1:]), dtype=torch.float32, device="cuda")

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.index + batch > len(images):
                return None
            self.device_batch.copy_(torch.from_numpy(images[self.index:self.index + batch]))
            self.index += batch
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data):
            write_bytes(cache, bytes(data))

    return Calibrator()


def serialize_engine(onnx_path: str | Path, input_shape: tuple[int, ...], precision: str, max_batch: int,
                     calibration: np.ndarray | None = None, calibration_cache: Path | None = None,
                     workspace_bytes: int = 1 << 30) -> tuple:
    """Parse the ONNX file and build a serialized engine with an optimisation profile for batch 1..max_batch.

    Returns (the tensorrt module, the plan's bytes, input name, output name).
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # the default from TensorRT 10
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeRobustError(f"TensorRT {trt.__version__} cannot parse {Path(onnx_path).name}: {errors[:300]}")
    input_name, output_name = network.get_input(0).name, network.get_output(0).name
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    optimisation = builder.create_optimization_profile()
    optimisation.set_shape(input_name, (1, *input_shape), (max_batch, *input_shape), (max_batch, *input_shape))
    config.add_optimization_profile(optimisation)
    record = PRECISIONS[precision]  # the builder flag and whether it calibrates: the precision's record
    if record.calibrated:
        if calibration is None or len(calibration) < max_batch:
            raise EdgeRobustError(f"{precision.upper()} needs at least {max_batch} calibration inputs; export with "
                                  "--calibration")
        config.int8_calibrator = _calibrator(trt, calibration, max_batch, Path(calibration_cache))
        config.set_calibration_profile(optimisation)
    if record.tensorrt_flag:
        flag = getattr(trt.BuilderFlag, record.tensorrt_flag, None)
        if flag is None:
            raise EdgeRobustError(f"TensorRT {trt.__version__} has no {record.tensorrt_flag} builder flag; choose "
                                  "another precision or update TensorRT")
        config.set_flag(flag)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeRobustError(f"TensorRT could not build a {precision} engine for {Path(onnx_path).name}")
    return trt, bytes(serialized), input_name, output_name


def build_engine(onnx_path: str | Path, engine_path: str | Path, profile: DeviceProfile, precision: str,
                 input_shape: tuple[int, ...], max_batch: int = 32, calibration: np.ndarray | None = None,
                 workspace_bytes: int = 1 << 30) -> dict:
    """Build the target's engine at `precision` on this machine (which must be the target's GPU) and write it."""
    profile.require_precision(precision)
    import_tensorrt()
    check_local_device(profile)
    trt, plan, _, _ = serialize_engine(onnx_path, input_shape, precision, max_batch, calibration,
                                       Path(engine_path).with_suffix(".calib"), workspace_bytes)
    write_bytes(engine_path, plan)
    return {"precision": precision, "tensorrt": trt.__version__, "compute_capability": profile.compute_capability,
            "max_batch": max_batch, "path": str(engine_path)}
