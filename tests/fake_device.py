"""A second device on a CPU-only machine, to test device plumbing without a GPU.

`OnOtherDevice` is a TorchFunctionMode. Inside it, `.to(OTHER)` (and factories with `device=OTHER`) give CPU
tensors of the subclass `Elsewhere`, whose `.device` says OTHER, so `placement(model)` and every
`x.to(model_device)` in the code under test behave as on a GPU: a model moved there has `Elsewhere` parameters,
and a batch the code moves there becomes `Elsewhere`. Any op that mixes an `Elsewhere` tensor with a non-scalar
plain CPU tensor raises `DeviceMismatch` — exactly the ops that fail on CUDA ("expected all tensors to be on the
same device"). Indexing an `Elsewhere` tensor with CPU indices is allowed, as CUDA allows it; the reverse is not.

The arithmetic is the CPU's, so a run on the fake device must equal the CPU run bit for bit: plumbing that moves
batches changes where tensors live, never the numbers. Hand-written because torch offers no CPU-backed second
device (meta and fake tensors carry no values, so no training loop or `.item()` can run on them).
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

OTHER = torch.device("meta")  # the name the fake device answers to; no real meta tensor is ever made

# functions that read metadata or plumbing, not data: mixing is harmless there
METADATA = {"_has_compatible_shallow_copy_type", "__get__", "__set__", "__setstate__", "__reduce_ex__",
            "is_floating_point", "dim", "size", "numel", "shape", "dtype", "requires_grad_", "detach",
            "data_ptr", "untyped_storage", "storage_offset", "stride", "is_contiguous", "register_hook",
            "_is_param", "is_leaf"}
INDEXING = {"__getitem__", "__setitem__"}


class DeviceMismatch(AssertionError):
    """A tensor on the CPU met one on the other device in one op: on a GPU this op would fail."""


class Elsewhere(torch.Tensor):
    """A CPU tensor that says it lives on OTHER."""

    @property
    def device(self) -> torch.device:
        return OTHER

    def __deepcopy__(self, memo):  # a copy stays on the device, a parameter stays a parameter
        with torch._C.DisableTorchFunctionSubclass():
            plain = torch.Tensor.as_subclass(self, torch.Tensor).detach().clone()
        out = torch.Tensor.as_subclass(plain, Elsewhere).requires_grad_(self.requires_grad)
        if getattr(self, "_is_param", False):
            out._is_param = True
        memo[id(self)] = out
        return out

    def __reduce_ex__(self, protocol):  # a checkpoint holds plain tensors, as one from a GPU loads onto the CPU
        with torch._C.DisableTorchFunctionSubclass():
            return torch.Tensor.as_subclass(self, torch.Tensor).__reduce_ex__(protocol)


def _as_elsewhere(tensor):
    """Autograd makes gradients as plain tensors; on a real device they are on the device, so here too."""
    if tensor is None or isinstance(tensor, Elsewhere):
        return tensor
    return torch.Tensor.as_subclass(tensor, Elsewhere)


def _autograd_grad(original):
    def grad(outputs, inputs, *args, **kwargs):
        grads = original(outputs, inputs, *args, **kwargs)
        sources = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        return tuple(_as_elsewhere(g) if isinstance(x, Elsewhere) else g for g, x in zip(grads, sources, strict=True))

    return grad


def _plain(t) -> bool:
    """A non-scalar tensor on the CPU (0-dim CPU tensors mix with CUDA ones legitimately)."""
    return isinstance(t, torch.Tensor) and not isinstance(t, Elsewhere) and t.dim() > 0


def _move(func_name: str, args, kwargs):
    base = args[0]
    if func_name == "cpu":
        target, dtype, non_blocking, fmt = torch.device("cpu"), None, False, None
    elif func_name == "cuda":
        raise DeviceMismatch("a tensor was moved to CUDA while the model is on the other device")
    else:
        target, dtype, non_blocking, fmt = torch._C._nn._parse_to(*args[1:], **kwargs)
    was_elsewhere = isinstance(base, Elsewhere)
    if was_elsewhere and target in (None, OTHER) and dtype in (None, base.dtype) and fmt is None \
            and not kwargs.get("copy"):
        return base  # nothing to do: like Tensor.to, the tensor itself (a parameter stays a parameter)
    with torch._C.DisableTorchFunctionSubclass():
        plain = torch.Tensor.as_subclass(base, torch.Tensor) if was_elsewhere else base
        out = plain.to(dtype=dtype or plain.dtype, non_blocking=non_blocking,
                       **({"memory_format": fmt} if fmt is not None else {}))
    if target is None:
        target = OTHER if was_elsewhere else torch.device("cpu")
    if target.type not in ("cpu", OTHER.type):
        raise DeviceMismatch(f"a tensor was moved to {target} while the model is on the other device")
    if target == OTHER:
        return torch.Tensor.as_subclass(out, Elsewhere)
    return out


class OnOtherDevice(TorchFunctionMode):
    """Within it, OTHER is a CPU-backed device that refuses to mix with the CPU (see the module docstring)."""

    def __enter__(self):
        self._overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
        # module.to(OTHER) must make the parameters themselves Elsewhere (not CPU Parameters holding Elsewhere data)
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        self._grad = torch.autograd.grad
        torch.autograd.grad = _autograd_grad(self._grad)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.__future__.set_overwrite_module_params_on_conversion(self._overwrite)
        torch.autograd.grad = self._grad
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in ("to", "cpu", "cuda"):
            return _move(name, args, kwargs)
        if name == "_parse_to":  # nn.Module.to parsing its arguments: the device is read, not created on
            return func(*args, **kwargs)
        if name == "__get__":  # a tensor attribute of a tensor on the device (.grad, .data, .T) is there too
            out = func(*args, **kwargs)
            return _as_elsewhere(out) if isinstance(args[0], Elsewhere) and isinstance(out, torch.Tensor) else out
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        if name not in METADATA and any(isinstance(t, Elsewhere) for t in tensors):
            mixed = [t for t in tensors if _plain(t)]
            if name in INDEXING and isinstance(args[0], Elsewhere):  # CPU indices may index a CUDA tensor
                mixed = [args[2]] if name == "__setitem__" and _plain(args[2]) else []
            if mixed:
                raise DeviceMismatch(f"{name}: a {tuple(mixed[0].shape)} tensor on the CPU met tensors on the "
                                     "other device")
        device = kwargs.get("device")
        if device is not None and not isinstance(device, torch.Tensor) and torch.device(device) == OTHER:
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **{**kwargs, "device": "cpu"})
            return torch.Tensor.as_subclass(out, Elsewhere) if isinstance(out, torch.Tensor) else out
        return func(*args, **kwargs)
