"""The runtimes edgerobust knows, as data: one record per runtime, defined once and read by device profiles,
`edgerobust bench` (its `RUNTIMES` registry implements exactly these names) and help texts.

A record says where the runtime computes (cpu or cuda), which precisions it takes, what it takes as input (an ONNX
graph or the PyTorch module), what to install to get it, and whether a device profile may list it (torch.compile is a
bench-only comparison, not a way to deploy). The shape follows Ultralytics' `export_formats()` table, with named
fields instead of positional slots.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry

DEVICE_KINDS = ("cpu", "cuda")
INPUT_FORMATS = ("onnx", "torch")


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    description: str
    device: str  # where it computes: cpu or cuda
    precisions: tuple[str, ...]
    input: str  # what it runs: an ONNX graph ("onnx") or the PyTorch module ("torch")
    install: str  # what to install / which hardware it needs, for "not available here" messages
    deployable: bool = True  # a device profile may list it

    def __post_init__(self) -> None:
        if self.device not in DEVICE_KINDS or self.input not in INPUT_FORMATS or "fp32" not in self.precisions:
            raise ValueError(f"runtime record {self.name}: device in {DEVICE_KINDS}, input in {INPUT_FORMATS}, "
                             "precisions including fp32")


_CUDA = "a machine with an NVIDIA GPU and a CUDA build of torch"

# In the order a profile's error message lists them: ONNX runtimes first, the way models are deployed.
_RECORDS = (
    RuntimeSpec("ort-cpu", "onnxruntime, CPU execution provider", "cpu", ("fp32", "fp16"), "onnx",
                "pip install onnxruntime"),
    RuntimeSpec("ort-cuda", "onnxruntime, CUDA execution provider", "cuda", ("fp32", "fp16"), "onnx",
                "install onnxruntime-gpu on a machine with an NVIDIA GPU"),
    RuntimeSpec("ort-tensorrt", "onnxruntime, TensorRT execution provider", "cuda", ("fp32", "fp16"), "onnx",
                "install onnxruntime-gpu and TensorRT (pip install tensorrt) on a machine with an NVIDIA GPU"),
    RuntimeSpec("ort-openvino", "onnxruntime, OpenVINO execution provider (Intel CPUs)", "cpu", ("fp32",), "onnx",
                "pip install onnxruntime-openvino on an Intel machine"),
    RuntimeSpec("tensorrt", "TensorRT engine built on this machine", "cuda", ("fp32", "fp16"), "onnx",
                "pip install tensorrt, edgerobust's `tensorrt` extra, on a machine with an NVIDIA GPU "
                "(on a Jetson: JetPack's python3-libnvinfer)"),
    RuntimeSpec("torch-cpu", "PyTorch eager on the CPU", "cpu", ("fp32",), "torch", "pip install torch"),
    RuntimeSpec("torch-cuda", "PyTorch eager on a CUDA GPU (synchronised timing)", "cuda", ("fp32", "fp16"), "torch",
                _CUDA),
    RuntimeSpec("torch-compile-cuda", "torch.compile (inductor) on a CUDA GPU", "cuda", ("fp32", "fp16"), "torch",
                f"{_CUDA}, and triton", deployable=False),
)
RUNTIME_SPECS: Registry[RuntimeSpec] = Registry("runtime")
for _spec in _RECORDS:
    RUNTIME_SPECS.register(_spec.name, _spec.description)(_spec)

# What a device profile's `runtimes` may list, in the order above.
PROFILE_RUNTIMES: tuple[str, ...] = tuple(s.name for s in _RECORDS if s.deployable)


def runtimes_taking(input_format: str) -> tuple[str, ...]:
    """The runtimes that run an ONNX graph ("onnx") or the PyTorch module ("torch")."""
    return tuple(s.name for s in _RECORDS if s.input == input_format)
