"""Runtimes a model can be timed on, by name: PyTorch eager / torch.compile, onnxruntime, TensorRT.

What each runtime is (device, precisions, input, install hint) is data in `edgerobust.devices.runtimes`; this file
implements every record there, one `Runtime` class each, registered by `implements(name)`. Each runtime says
whether it can run here and, if not, why (the missing package or hardware). A loaded runtime is a `Session`:
`prepare` turns a host batch into the runtime's own input (including any copy to the GPU), `run` does one forward
pass and returns only when the device has finished, `infer` returns logits on the host for parity checks.
"""
from __future__ import annotations

import contextlib
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..devices.runtimes import RUNTIME_SPECS, RuntimeSpec
from ..errors import EdgeRobustError
from ..registry import Registry
from ..runner.ort_options import SkipRefused
from ..runner.ort_options import open_session as open_ort_session
from ..runner.precisions import PRECISIONS


@dataclass
class BenchModel:
    """One model to time: the PyTorch module and, for ONNX-based runtimes, its exported graph(s)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    onnx: dict[str, Path] = field(default_factory=dict)  # precision -> .onnx path

    def onnx_path(self, precision: str, runtime: str) -> Path:
        path = self.onnx.get(precision)
        if path is None:
            have = ", ".join(sorted(self.onnx)) or "none"
            raise EdgeRobustError(f"runtime {runtime} needs a {precision} ONNX export of {self.name} (have: {have}); "
                                  f"run `edgerobust export` with a target that allows {precision}")
        return Path(path)


class Session:
    name = ""
    device = "cpu"
    compile_seconds = 0.0

    def prepare(self, batch: np.ndarray) -> Any:
        raise NotImplementedError

    def run(self, prepared: Any) -> None:
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for the device; a no-op on CPU."""

    def close(self) -> None:
        """Release what the session holds (restores global thread settings)."""


class Runtime:
    """A named way to execute a model. `implements` fills in the attributes from the runtime's record; subclasses
    write the three methods."""

    spec: RuntimeSpec
    name = ""
    device = "cpu"
    precisions: tuple[str, ...] = ("fp32",)
    extra = ""  # what to install / which hardware is needed, for error messages

    def availability(self) -> tuple[bool, str]:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def load(self, model: BenchModel, precision: str, threads: int, max_batch: int) -> Session:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        ok, reason = self.availability()
        return {"name": self.name, "device": self.device, "available": ok, "reason": reason,
                "version": self.version() if ok else None, "precisions": list(self.precisions),
                "input": self.spec.input}


RUNTIMES: Registry[type[Runtime]] = Registry("runtime")


def implementing(cls: type[Runtime], name: str) -> type[Runtime]:
    """`cls` with the attributes of the runtime record `name` (devices/runtimes.py), not yet registered."""
    spec = RUNTIME_SPECS.get(name)
    cls.spec, cls.name, cls.device, cls.precisions, cls.extra = (spec, spec.name, spec.device, spec.precisions,
                                                                 spec.install)
    return cls


def implements(name: str):
    """Register a `Runtime` class as the implementation of the runtime record `name` (devices/runtimes.py)."""
    def decorator(cls: type[Runtime]) -> type[Runtime]:
        return RUNTIMES.register(name, RUNTIME_SPECS.help(name))(implementing(cls, name))

    return decorator


def get_runtime(name: str) -> Runtime:
    return RUNTIMES.get(name)()


def require_runtime(name: str, precision: str = "fp32") -> Runtime:
    """The runtime by name, or one clear line saying why it cannot run here or at this precision."""
    runtime = get_runtime(name)
    ok, reason = runtime.availability()
    if not ok:
        raise EdgeRobustError(f"runtime {name} is not available here: {reason}")
    if precision not in runtime.precisions:
        raise EdgeRobustError(f"runtime {name} cannot run {precision}; it supports {', '.join(runtime.precisions)}")
    return runtime


def runtime_table() -> list[dict[str, Any]]:
    return [get_runtime(name).describe() for name in RUNTIMES]


# -- shared checks ------------------------------------------------------------------------------------------------
def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _cuda_reason() -> str:
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA device"
        return f"no CUDA GPU ({build}); run on a machine with an NVIDIA GPU and a CUDA build of torch"
    return ""


def _ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


# -- PyTorch ------------------------------------------------------------------------------------------------------
class TorchSession(Session):
    def __init__(self, module: nn.Module, device: str, dtype: torch.dtype, threads: int, name: str):
        self.name, self.device, self.dtype = name, device, dtype
        self._saved_threads = torch.get_num_threads()
        if device == "cpu":
            torch.set_num_threads(threads)
        self.module = module.to(device=device, dtype=dtype).eval()

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype, non_blocking=False)
        self.sync()
        return x

    def run(self, prepared: torch.Tensor) -> None:
        with torch.inference_mode():
            self.module(prepared)
        self.sync()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(self.prepare(batch))
        return out.float().cpu().numpy()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def close(self) -> None:
        torch.set_num_threads(self._saved_threads)


def _torch_module(model: BenchModel) -> nn.Module:
    import copy

    return copy.deepcopy(model.module).eval()  # the caller's module keeps its device and dtype


@implements("torch-cpu")
class TorchCPU(Runtime):

    def availability(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        return torch.__version__

    def load(self, model: BenchModel, precision: str, threads: int, max_batch: int) -> Session:
        return TorchSession(_torch_module(model), "cpu", torch.float32, threads, self.name)


@implements("torch-cuda")
class TorchCUDA(Runtime):

    def availability(self) -> tuple[bool, str]:
        reason = _cuda_reason()
        return not reason, reason

    def version(self) -> str:
        return f"{torch.__version__} (CUDA {torch.version.cuda})"

    def load(self, model: BenchModel, precision: str, threads: int, max_batch: int) -> Session:
        dtype = getattr(torch, PRECISIONS[precision].storage)  # the precision record's storage type
        return TorchSession(_torch_module(model), "cuda", dtype, threads, self.name)


@implements("torch-compile-cuda")
class TorchCompileCUDA(TorchCUDA):

    def availability(self) -> tuple[bool, str]:
        reason = _cuda_reason()
        if not reason and not _has_module("triton"):
            reason = "triton is not installed (torch.compile needs it on CUDA); pip install triton"
        return not reason, reason

    def load(self, model: BenchModel, precision: str, threads: int, max_batch: int) -> Session:
        session = super().load(model, precision, threads, max_batch)
        session.name = self.name
        session.module = torch.compile(session.module, dynamic=True)
        started = time.perf_counter()
        try:  # compile now, so the first timed call is not the compilation
            session.run(session.prepare(np.zeros((max_batch, *model.input_shape), np.float32)))
        except Exception as exc:  # inductor failures are varied; report them as "does not work here"
            session.close()
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise EdgeRobustError(f"torch.compile failed for {model.name} on this GPU ({reason}); "
                                  "bench torch-cuda instead") from None
        session.compile_seconds = time.perf_counter() - started
        return session


# -- onnxruntime --------------------------------------------------------------------------------------------------
class OrtSession(Session):
    """onnxruntime; on a GPU provider inputs and outputs stay on the device through IO binding."""

    def __init__(self, path: Path, providers: list, threads: int, name: str, device: str):
        import onnxruntime as ort

        self.name, self.device = name, device
        try:  # the runner's session settings, skipping what the artifact asks (runner/ort_options.py)
            self.session, self.disabled_optimizers = open_ort_session(ort, str(path), threads, providers)
        except SkipRefused as exc:
            raise EdgeRobustError(f"{path}: {exc}") from None
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            reason = str(exc).strip().splitlines()[0][:200]
            raise EdgeRobustError(f"onnxruntime cannot load {path} with {name} ({reason})") from None
        inp = self.session.get_inputs()[0]
        self.input_name, self.output_name = inp.name, self.session.get_outputs()[0].name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.active_providers = self.session.get_providers()
        self._binding = None

    def prepare(self, batch: np.ndarray) -> Any:
        batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        if self.device == "cpu":
            return batch
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)  # the host-to-device copy happens here

    def run(self, prepared: Any) -> None:
        if self.device == "cpu":
            self.session.run([self.output_name], {self.input_name: prepared})
            return
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, prepared)
        binding.bind_output(self.output_name, "cuda")
        self.session.run_with_iobinding(binding)  # synchronises the CUDA stream before returning (ORT default)
        self._binding = binding

    def close(self) -> None:
        self.session = self._binding = None  # frees onnxruntime's thread pool now, not at garbage collection

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, self.input_dtype)})
        return np.asarray(out[0], dtype=np.float32)


class _OrtRuntime(Runtime):
    provider = "CPUExecutionProvider"

    def availability(self) -> tuple[bool, str]:
        if not _has_module("onnxruntime"):
            return False, "onnxruntime is not installed; pip install onnxruntime"
        if self.provider not in _ort_providers():
            return False, f"onnxruntime has no {self.provider} ({self.extra})"
        return True, ""

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def providers(self, threads: int) -> list:
        return [self.provider]

    def load(self, model: BenchModel, precision: str, threads: int, max_batch: int) -> Session:
        session = OrtSession(model.onnx_path(precision, self.name), self.providers(threads), threads, self.name,
                             self.device)
        if session.active_providers[0] != self.provider:  # never report a silent CPU fallback as a GPU number
            raise EdgeRobustError(f"onnxruntime fell back to {session.active_providers[0]} for {model.name}; "
                                  f"{self.provider} could not take the graph")
        return session


@implements("ort-cpu")
class OrtCPU(_OrtRuntime):
    provider = "CPUExecutionProvider"


@implements("ort-cuda")
class OrtCUDA(_OrtRuntime):
    provider = "CUDAExecutionProvider"

    def providers(self, threads: int) -> list:
        return [self.provider, "CPUExecutionProvider"]


@implements("ort-tensorrt")
class OrtTensorRT(_OrtRuntime):
    provider = "TensorrtExecutionProvider"
    fp16 = False

    def providers(self, threads: int) -> list:
        return [(self.provider, {"trt_fp16_enable": self.fp16}), "CUDAExecutionProvider", "CPUExecutionProvider"]

    def load(self, model: BenchModel, precision: str, threads: int, max_batch: int) -> Session:
        self.fp16 = PRECISIONS[precision].tensorrt_flag == "FP16"  # TensorRT lowers an fp32 graph to fp16 itself
        return super().load(BenchModel(model.name, model.module, model.input_shape,
                                       {precision: model.onnx_path("fp32", self.name)}), precision, threads, max_batch)


@implements("ort-openvino")
class OrtOpenVINO(_OrtRuntime):
    provider = "OpenVINOExecutionProvider"

    def providers(self, threads: int) -> list:
        return [(self.provider, {"num_of_threads": threads}), "CPUExecutionProvider"]


# -- TensorRT -----------------------------------------------------------------------------------------------------
class TensorRTSession(Session):
    """A TensorRT engine built here from the ONNX graph (engines never travel between machines)."""

    def __init__(self, onnx_path: Path, input_shape: tuple[int, ...], precision: str, max_batch: int):
        from ..export.tensorrt_build import serialize_engine

        self.name, self.device, self.input_shape = "tensorrt", "cuda", tuple(input_shape)
        started = time.perf_counter()
        trt, plan, self.input_name, self.output_name = serialize_engine(onnx_path, input_shape, precision, max_batch)
        self.compile_seconds = time.perf_counter() - started
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        fp16_out = self.engine.get_tensor_dtype(self.output_name) == trt.float16
        self.out_dtype = torch.float16 if fp16_out else torch.float32

    def prepare(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda()
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.out_dtype, device="cuda")
        torch.cuda.synchronize()
        return x, out

    def run(self, prepared: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, out = prepared
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EdgeRobustError("TensorRT execution failed")
        self.stream.synchronize()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        prepared = self.prepare(batch)
        self.run(prepared)
        return prepared[1].float().cpu().numpy()

    def sync(self) -> None:
        torch.cuda.synchronize()


@implements("tensorrt")
class TensorRT(Runtime):

    def availability(self) -> tuple[bool, str]:
        if not _has_module("tensorrt"):
            return False, f"tensorrt is not importable ({self.extra})"
        reason = _cuda_reason()
        return not reason, reason

    def version(self) -> str:
        import tensorrt as trt

        return trt.__version__

    def load(self, model: BenchModel, precision: str, threads: int, max_batch: int) -> Session:
        return TensorRTSession(model.onnx_path("fp32", self.name), model.input_shape, precision, max_batch)


@contextlib.contextmanager
def open_session(runtime: Runtime, model: BenchModel, precision: str, threads: int, max_batch: int):
    session = runtime.load(model, precision, threads, max_batch)
    try:
        yield session
    finally:
        session.close()
