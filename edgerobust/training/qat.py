"""Quantization-aware training: the model trains through the int8 arithmetic of the QDQ graph it exports to.

Every nn.Conv2d / nn.Linear computes with fake-quantized weights (per-output-channel symmetric int8, scale max|w|/127
as onnxruntime's quantizer sets it), a fake-quantized input and a fake-quantized output (uint8 asymmetric), which are
the tensors onnxruntime's QDQ quantizer quantizes around Conv and Gemm (export/quantize.py, `qat`). A convolution
followed by a BatchNorm has its output quantized after the BatchNorm, where the exported graph (BatchNorm folded into
the convolution) quantizes it; per-channel weight scales make the integer weights of the folded convolution those
of the unfolded one (a per-channel factor scales the weights and their scale alike). Modules reading the same tensor
share one quantizer, as the graph has one QuantizeLinear per tensor. Activation ranges come from torch's
`MovingAverageMinMaxObserver` (quint8, per-tensor affine: the scale and zero point onnxruntime's formula gives for
the same range), updated by training forwards until the observers freeze. The rounding is models/fake_quant.py's
(round half to even, saturation, straight-through gradient). Because it wraps the model, every loss trains through
it (natural, PGD, TRADES, ...: robust QAT). Jacob et al. 2018 (integer-only inference) describe the scheme.

The quantizers live outside the model (its state dict, and so the run's weights, stay those of the plain network);
`QatCallback` checkpoints them and records the frozen scales and zero points per module in the run's manifest, and
`fake_quant_model` rebuilds the fake-quant model from that record.
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.ao.quantization import MovingAverageMinMaxObserver

from ..errors import EdgeRobustError
from ..models.fake_quant import RANGES, WEIGHT_RANGE, fake_quantize, weight_scales
from .loop import Callback

QUANTIZED = (nn.Conv2d, nn.Linear)
FOLDED = (nn.BatchNorm2d, nn.BatchNorm1d)
AVERAGING = 0.1


@dataclass(frozen=True)
class QatSettings:
    """[train] qat settings: when the activation observers freeze, and what is quantized how."""

    freeze_step: int  # global step at which activation observers stop updating
    weights: str = "int8, symmetric, per output channel"
    activations: str = "uint8, asymmetric, per tensor (moving-average min/max until frozen)"
    rounding: str = "half to even, saturating, straight-through gradient"

    def describe(self) -> dict[str, Any]:
        return {"freeze_step": self.freeze_step, "weights": self.weights, "activations": self.activations,
                "rounding": self.rounding}


class ActivationQuantizer(nn.Module):
    """A uint8 asymmetric fake quantizer: observes while training and not frozen, or holds fixed (scale, zero)."""

    def __init__(self, fixed: tuple[float, int] | None = None):
        super().__init__()
        self.observer = MovingAverageMinMaxObserver(averaging_constant=AVERAGING, dtype=torch.quint8,
                                                    qscheme=torch.per_tensor_affine)
        self.register_buffer("frozen", torch.tensor(fixed is not None))
        self.register_buffer("scale", torch.tensor(1.0 if fixed is None else fixed[0], dtype=torch.float32))
        self.register_buffer("zero", torch.tensor(0 if fixed is None else fixed[1], dtype=torch.int64))

    def freeze(self) -> None:
        self.frozen.fill_(True)

    def qparams(self) -> tuple[float, int]:
        return float(self.scale), int(self.zero)

    def forward(self, x: torch.Tensor, observe: bool) -> torch.Tensor:
        if observe and not bool(self.frozen):
            self.observer(x.detach().float())
            scale, zero = self.observer.calculate_qparams()
            self.scale.copy_(scale.reshape(()))
            self.zero.copy_(zero.reshape(()))
        low, high = RANGES["uint8"]
        scale = self.scale.to(device=x.device, dtype=x.dtype).clone()  # copies: a later observation updates
        zero = self.zero.to(device=x.device, dtype=x.dtype).clone()  # the buffers in place
        return fake_quantize(x, scale, zero, low, high)


def _quantized_forward(module: nn.Module, inputs: ActivationQuantizer, output: ActivationQuantizer | None):
    """The forward of a quantized conv/linear: fake-quant input, int8 fake-quant weights, fake-quant output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = inputs(x, self.training)
        weight = fake_quantize(self.weight, weight_scales(self.weight).to(self.weight.dtype), 0.0, *WEIGHT_RANGE)
        y = self._conv_forward(x, weight, self.bias) if isinstance(self, nn.Conv2d) \
            else nn.functional.linear(x, weight, self.bias)
        return y if output is None else output(y, self.training)

    return types.MethodType(forward, module)


def _probe(model: nn.Module, example: torch.Tensor) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The quantized modules in call order; where each one's output is quantized (itself, or the BatchNorm right
    after it); and which module's input quantizer each one shares (the first module reading the same tensor, or the
    module whose quantized output it reads)."""
    calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # tensors kept alive: ids stay unique
    names = {module: name for name, module in model.named_modules()}
    hooks = [module.register_forward_hook(lambda m, i, o: calls.append((names[m], i[0], o)))
             for module in model.modules() if isinstance(module, QUANTIZED + FOLDED)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    modules = dict(model.named_modules())
    order = list(dict.fromkeys(name for name, _, _ in calls if isinstance(modules[name], QUANTIZED)))
    if not order:
        raise EdgeRobustError("quantization-aware training needs a model with Conv2d or Linear layers and this one "
                              "has none; train without --qat")
    produced = {id(o): name for name, _, o in calls if isinstance(modules[name], QUANTIZED)}
    output_at = {name: name for name in order}
    for name, i, _ in calls:  # a BatchNorm reading a convolution's output: the output is quantized after it
        if isinstance(modules[name], FOLDED) and id(i) in produced:
            output_at[produced[id(i)]] = name
    out_tensor = {id(o): conv for conv, at in output_at.items() for name, _, o in calls if name == at}
    shares: dict[str, str] = {}
    first_reader: dict[int, str] = {}
    for name, i, _ in calls:
        if isinstance(modules[name], QUANTIZED) and name not in shares:
            shares[name] = out_tensor.get(id(i)) and f"out:{out_tensor[id(i)]}" or first_reader.setdefault(
                id(i), f"in:{name}")
    return order, output_at, shares


class QuantizationAware:
    """Fake quantization attached to a model's conv/linear modules (see the module docstring); `detach` undoes it."""

    def __init__(self, model: nn.Module, example: torch.Tensor,
                 fixed: dict[str, dict[str, list[float]]] | None = None):
        self.model = model
        self.order, self.output_at, shares = _probe(model, example)
        modules = dict(model.named_modules())
        self.quantizers = nn.ModuleDict()
        for name in self.order:
            for point in (shares[name], f"out:{name}"):
                key = point.replace(".", "/")  # ModuleDict keys cannot hold dots
                if key not in self.quantizers:
                    record = (fixed or {}).get(point.split(":", 1)[1], {})
                    qp = record.get("input" if point.startswith("in:") else "output")
                    if fixed is not None and qp is None:
                        raise EdgeRobustError(f"the run's QAT record has no {point} quantizer for this model; "
                                              "it was written for another architecture")
                    self.quantizers[key] = ActivationQuantizer(None if qp is None else (qp[0], int(qp[1])))
        self.quantizers.to(example.device)
        self.hooks = []
        for name in self.order:
            module = modules[name]
            inputs, output = self.quantizer(shares[name]), self.quantizer(f"out:{name}")
            self.shares = shares
            at = self.output_at[name]
            module.forward = _quantized_forward(module, inputs, output if at == name else None)
            if at != name:
                self.hooks.append(modules[at].register_forward_hook(
                    lambda m, i, o, q=output: q(o, m.training)))

    def quantizer(self, point: str) -> ActivationQuantizer:
        return self.quantizers[point.replace(".", "/")]

    def freeze(self) -> None:
        for quantizer in self.quantizers.values():
            quantizer.freeze()

    def record(self) -> dict[str, dict[str, list[float]]]:
        """Per quantized module: its input's and its output's (scale, zero point), as the export reads them."""
        return {name: {"input": list(self.quantizer(self.shares[name]).qparams()),
                       "output": list(self.quantizer(f"out:{name}").qparams())} for name in self.order}

    def detach(self) -> None:
        modules = dict(self.model.named_modules())
        for name in self.order:
            del modules[name].forward  # the class's forward again
        for hook in self.hooks:
            hook.remove()


class QatCallback(Callback):
    """Attaches fake quantization when training starts and freezes the observers at `settings.freeze_step`."""

    def __init__(self, settings: QatSettings):
        self.settings = settings
        self.qat: QuantizationAware | None = None
        self.pending: dict[str, Any] | None = None

    def attach(self, model: nn.Module, example: torch.Tensor) -> None:
        if self.qat is None:
            self.qat = QuantizationAware(model, example)
            if self.pending is not None:
                self.qat.quantizers.load_state_dict(self.pending)

    def on_after_step(self, trainer) -> None:
        if trainer.global_step + 1 >= self.settings.freeze_step:
            self.qat.freeze()

    def state_dict(self) -> dict[str, Any]:
        return {"quantizers": self.qat.quantizers.state_dict()} if self.qat is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "quantizers" in state:
            if self.qat is not None:
                self.qat.quantizers.load_state_dict(state["quantizers"])
            else:
                self.pending = state["quantizers"]

    def describe(self) -> dict[str, Any]:
        return self.settings.describe() | {"points": self.qat.record() if self.qat else {}}


def fake_quant_model(model: nn.Module, record: dict[str, Any], example: torch.Tensor) -> QuantizationAware:
    """`model` computing as the QAT run's fake-quant model (the manifest's `training.qat` record, frozen)."""
    return QuantizationAware(model, example, fixed=record["points"])


def onnx_node_name(module_name: str, op_type: str) -> str:
    """The node name torch's TorchScript exporter gives module `module_name`'s operator: one scope per module,
    a numbered child named with its parent ("layers.0"), e.g. net.layers.0.0.conv1 -> /net/layers/layers.0/
    layers.0.0/conv1/Conv."""
    parts, scopes = module_name.split("."), []
    for k in range(len(parts)):
        start = k
        while start > 0 and parts[start].isdigit():
            start -= 1
        scopes.append(".".join(parts[start:k + 1]))
    return "/" + "/".join(scopes) + "/" + op_type
