"""A classifier that is an ONNX file: an `nn.Module` whose forward runs the graph in onnxruntime (CPU).

What a run imported from `model.onnx` loads (`RunDir.load_model`): everything that only evaluates the model — clean
accuracy, the query-only Square attack, golden outputs, bench inputs — works on it unchanged. It has no parameters
and no gradients (`gradients = False`), so white-box attacks, training and pruning refuse it by that flag, in one
line, instead of failing inside autograd. Inputs of any float dtype and device are run in float32 on the CPU and the
logits come back in the input's dtype and device.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import EdgeRobustError

SESSION_THREADS = 1  # one intra-op thread: results do not depend on the host's thread count


class OnnxClassifier(nn.Module):
    gradients = False

    def __init__(self, path: str | Path, input_name: str, output_name: str):
        super().__init__()
        self.path = Path(path)
        self.input_name, self.output_name = input_name, output_name
        self._session = None

    def session(self):
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = SESSION_THREADS
            options.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own error types for a bad graph)
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise EdgeRobustError(f"onnxruntime cannot open {self.path.name} ({reason})") from None
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise EdgeRobustError(f"{self.path.name} is an ONNX graph run by onnxruntime: it has no gradients; use "
                                  "query-only attacks (square) or convert it to PyTorch")
        batch = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits = self.session().run([self.output_name], {self.input_name: batch})[0]
        return torch.from_numpy(np.asarray(logits, np.float32)).to(device=x.device, dtype=x.dtype)

    def __deepcopy__(self, memo):  # an onnxruntime session is not copyable; a copy opens its own
        copy = OnnxClassifier(self.path, self.input_name, self.output_name)
        copy.train(self.training)
        return copy

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def extra_repr(self) -> str:
        return f"{self.path.name}, {self.input_name} -> {self.output_name}"


def has_gradients(model: nn.Module) -> bool:
    """False for a model that is an ONNX graph (or wraps one): white-box attacks, training and pruning need them."""
    return all(getattr(m, "gradients", True) for m in model.modules())


CONVERTER = "onnx2torch"
PARITY_INPUTS = 8


class ConversionUnavailable(EdgeRobustError):
    """No PyTorch module can be made from the graph here (the converter is missing or cannot take the graph)."""


def convert_to_torch(path: str | Path) -> nn.Module:
    """The graph as a PyTorch module (gradients included), by onnx2torch, a maintained converter, where it is
    installed and handles every operator; `ConversionUnavailable` says why not."""
    try:
        import onnx2torch
    except Exception as exc:  # noqa: BLE001  (ImportError, or a torchvision built for another torch)
        raise ConversionUnavailable(f"{CONVERTER} is not usable here ({_line(exc)}); `pip install {CONVERTER}` "
                                    "with a torchvision built for this torch enables it") from None
    try:
        return onnx2torch.convert(str(path)).eval()
    except Exception as exc:  # noqa: BLE001  (the converter's own errors for an operator it lacks)
        raise ConversionUnavailable(f"{CONVERTER} cannot convert {Path(path).name} ({_line(exc)})") from None


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def conversion_status(path: str | Path, input_name: str, output_name: str, shape) -> dict:
    """Whether the graph converts to PyTorch, and the conversion's parity with onnxruntime on seeded inputs: the
    record an ONNX run keeps (`model.source.torch_conversion`); `available` only when the outputs agree."""
    import importlib.metadata

    try:
        module = convert_to_torch(path)
    except ConversionUnavailable as exc:
        return {"available": False, "reason": str(exc)}
    x = torch.rand(PARITY_INPUTS, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = OnnxClassifier(path, input_name, output_name)(x)
        try:
            converted = module(x)
        except Exception as exc:  # noqa: BLE001
            return {"available": False, "reason": f"the converted module fails to run ({_line(exc)})"}
    diff = float((converted.float() - reference).abs().max()) if converted.shape == reference.shape else float("inf")
    tolerance = 1e-4 * max(1.0, float(reference.abs().max()))  # float32 reordering between two runtimes
    status = {"converter": CONVERTER, "version": importlib.metadata.version(CONVERTER), "max_abs_diff": diff,
              "tolerance": tolerance, "inputs": PARITY_INPUTS, "available": diff <= tolerance}
    if diff > tolerance:
        status["reason"] = f"the converted module differs from onnxruntime by {diff:.3g} (> {tolerance:.3g})"
    return status
