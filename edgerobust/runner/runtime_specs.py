"""Runtimes, as data: one record per runtime, the single table host and device both read (Python 3.6+, stdlib).

A record says where the runtime computes (cpu or cuda), which precisions it takes, what it runs (an ONNX graph or
the PyTorch module), what to install to get it, and whether a device profile may list it (torch.compile is a
bench-only comparison, not a way to deploy). The shape follows Ultralytics' `export_formats()` table, with named
fields instead of positional slots. The host's `bench` implements records with one class each
(edgerobust/bench/runtimes.py), the runner implements the ones a device runs (runtimes.py here, `runs(name)`);
device profiles and help texts read the records. Adding a runtime is one `register(RuntimeSpec(...))` here and one
class on each side that runs it.
"""
from collections import OrderedDict

from .precisions import PRECISIONS, REFERENCE

DEVICE_KINDS = ("cpu", "cuda")
INPUT_FORMATS = ("onnx", "torch")


class RuntimeSpec(object):
    """One runtime: name, description, device kind, precisions, input format, install hint, deployable."""

    __slots__ = ("name", "description", "device", "precisions", "input", "install", "deployable")

    def __init__(self, name, description, device, precisions, input, install, deployable=True):
        if device not in DEVICE_KINDS or input not in INPUT_FORMATS or REFERENCE not in precisions:
            raise ValueError("runtime record {}: device in {}, input in {}, precisions including {}".format(
                name, DEVICE_KINDS, INPUT_FORMATS, REFERENCE))
        self.name, self.description, self.device, self.precisions = name, description, device, tuple(precisions)
        self.input, self.install, self.deployable = input, install, deployable

    def __repr__(self):
        return "RuntimeSpec({!r}, device={!r}, precisions={!r})".format(self.name, self.device, self.precisions)

    def __eq__(self, other):
        return isinstance(other, RuntimeSpec) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self):
        return hash(self.name)


# In the order a profile's error message lists them: ONNX runtimes first, the way models are deployed.
RUNTIME_SPECS = OrderedDict()


def register(record):
    unknown = [p for p in record.precisions if p not in PRECISIONS]
    if record.name in RUNTIME_SPECS or unknown:
        raise ValueError("runtime {} registered twice, or with precisions {} not in precisions.py".format(
            record.name, unknown))
    RUNTIME_SPECS[record.name] = record
    return record


def profile_runtimes():
    """What a device profile's `runtimes` may list, in table order."""
    return tuple(name for name, spec in RUNTIME_SPECS.items() if spec.deployable)


def runtimes_taking(input_format):
    """The runtimes that run an ONNX graph ("onnx") or the PyTorch module ("torch")."""
    return tuple(name for name, spec in RUNTIME_SPECS.items() if spec.input == input_format)


_CUDA = "a machine with an NVIDIA GPU and a CUDA build of torch"
register(RuntimeSpec("ort-cpu", "onnxruntime, CPU execution provider", "cpu", ("fp32", "fp16", "int8"), "onnx",
                     "pip install onnxruntime"))
register(RuntimeSpec("ort-cuda", "onnxruntime, CUDA execution provider", "cuda", ("fp32", "fp16"), "onnx",
                     "install onnxruntime-gpu on a machine with an NVIDIA GPU"))
register(RuntimeSpec("ort-tensorrt", "onnxruntime, TensorRT execution provider", "cuda", ("fp32", "fp16"), "onnx",
                     "install onnxruntime-gpu and TensorRT (pip install tensorrt) on a machine with an NVIDIA GPU"))
register(RuntimeSpec("ort-openvino", "onnxruntime, OpenVINO execution provider (Intel CPUs)", "cpu", ("fp32",),
                     "onnx", "pip install onnxruntime-openvino on an Intel machine"))
register(RuntimeSpec("tensorrt", "TensorRT engine built on this machine", "cuda", ("fp32", "fp16"), "onnx",
                     "pip install tensorrt, edgerobust's `tensorrt` extra, on a machine with an NVIDIA GPU "
                     "(on a Jetson: JetPack's python3-libnvinfer)"))
register(RuntimeSpec("torch-cpu", "PyTorch eager on the CPU", "cpu", ("fp32",), "torch", "pip install torch"))
register(RuntimeSpec("torch-cuda", "PyTorch eager on a CUDA GPU (synchronised timing)", "cuda", ("fp32", "fp16"),
                     "torch", _CUDA))
register(RuntimeSpec("torch-compile-cuda", "torch.compile (inductor) on a CUDA GPU", "cuda", ("fp32", "fp16"),
                     "torch", _CUDA + ", and triton", deployable=False))
