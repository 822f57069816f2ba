"""The device computations run on: `--device auto|cpu|cuda|cuda:N`, resolved once and threaded through.

Bottom layer (torch only). A model lives on one device in one floating dtype; `placement(model)` says which, and
`to_model` puts a batch there (floating tensors also take the model's dtype, so a float64 model, as the exactness
tests use, gets float64 batches by the same path that gives a CUDA model CUDA batches). Every module that feeds a
model calls `to_model` rather than assuming the CPU.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import EdgeRobustError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None): CUDA when present, else the CPU; `cpu`; `cuda` (the current CUDA device); `cuda:N`.

    A CUDA device that is absent, or an index beyond the devices present, is one EdgeRobustError line. A
    torch.device is taken as already resolved (library callers, tests on other devices) and returned as it is.
    """
    if isinstance(spec, torch.device):
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    kind, colon, index = text.partition(":")
    if kind != "cuda" or (colon and not index.isdigit()):
        raise EdgeRobustError(f"unknown device '{spec}'; use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise EdgeRobustError(f"device '{spec}' was asked for but CUDA is not available here (torch "
                              f"{torch.__version__}); use --device cpu or auto")
    count = torch.cuda.device_count()
    if colon and int(index) >= count:
        raise EdgeRobustError(f"device '{spec}' does not exist: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", int(index)) if colon else torch.device("cuda", torch.cuda.current_device())


@dataclass(frozen=True)
class Placement:
    """Where a model computes: its device and the dtype of its floating parameters."""

    device: torch.device
    dtype: torch.dtype = torch.float32

    def put(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on this device; floating tensors also in this dtype (a no-op when already there)."""
        if tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(self.device)


def placement(model: nn.Module) -> Placement:
    """The device and floating dtype of the model's first floating parameter or buffer (CPU float32 if none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return Placement(tensor.device, tensor.dtype)
    return Placement(torch.device("cpu"), torch.get_default_dtype())


def to_model(model: nn.Module, *tensors: torch.Tensor) -> Any:
    """The tensors on the model's device (floating ones in its dtype): one tensor, or a tuple for several."""
    where = placement(model)
    moved = tuple(where.put(t) for t in tensors)
    return moved[0] if len(moved) == 1 else moved


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """float32 matmuls and convolutions in full float32 on CUDA (no TF32, whose 10-bit mantissa would be the
    error a parity or CPU-agreement check measured); restores the previous settings. A no-op on the CPU."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def describe_device(device: torch.device) -> dict[str, Any]:
    """What a manifest records about the device a command used."""
    info: dict[str, Any] = {"device": str(device), "type": device.type}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    return info
