"""A second device simulated on the CPU: find every tensor an attack puts on another device than its input's.

`SimulatedDevice` is a torch function mode. Tensors placed on it (`place`) report `FOREIGN` (cuda:0) as their
`.device` while their data stays on the CPU; every torch call inside the mode propagates that placement, replaces a
`FOREIGN` device argument by the CPU before running, and records a violation when

- a call mixes tensors of the two devices (CUDA refuses that; a 0-dim CPU tensor is allowed, as CUDA allows it), or
- a random draw names the foreign device (a CUDA generator gives other numbers than the seeded CPU one), or
- a random draw uses no generator while `seeded` (it would depend on the global RNG, not the attack's seed).

So a factory call without `device=x.device` (or a CPU draw never moved with `.to(x.device)`) surfaces as soon as its
result meets the input, exactly where CUDA would fail, with no GPU. The computation itself is the CPU's.
"""
from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils.weak import WeakTensorKeyDictionary

FOREIGN = torch.device("cuda", 0)
CPU = torch.device("cpu")
RANDOM = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "bernoulli", "normal",
          "multinomial", "uniform_", "normal_", "random_", "exponential_", "bernoulli_"}
_DEVICE_GET = torch.Tensor.device.__get__


def _is_foreign(value) -> bool:
    if isinstance(value, torch.device):
        return value.type == FOREIGN.type
    return isinstance(value, str) and value.split(":")[0] == FOREIGN.type


def _to_cpu(value):
    return CPU if _is_foreign(value) else value


def _where() -> str:
    """The innermost frame of the project's code, to say where a violation happened."""
    for frame in reversed(traceback.extract_stack()):
        if "edgerobust" in frame.filename:
            return f"{frame.filename.rsplit('edgerobust', 1)[1]}:{frame.lineno} {frame.line}"
    return "outside edgerobust"


class SimulatedDevice(TorchFunctionMode):
    def __init__(self, seeded: bool = True):
        super().__init__()
        self.tags = WeakTensorKeyDictionary()  # tensor -> True when on the simulated device
        self.seeded = seeded
        self.violations: list[str] = []

    def place(self, *things):
        """Put tensors (and a module's parameters and buffers) on the simulated device."""
        for thing in things:
            if isinstance(thing, torch.nn.Module):
                self.place(*thing.parameters(), *thing.buffers())
            else:
                self.tags[thing] = True
        return things[0] if len(things) == 1 else things

    def on_device(self, tensor: torch.Tensor) -> bool:
        return bool(self.tags.get(tensor, False))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == _DEVICE_GET:
            return FOREIGN if self.on_device(args[0]) else CPU
        leaves = pytree.tree_leaves((args, kwargs))
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        names_foreign = any(_is_foreign(leaf) for leaf in leaves)
        names_device = any(isinstance(leaf, torch.device) or (isinstance(leaf, str) and leaf.split(":")[0] in
                                                               ("cpu", FOREIGN.type)) for leaf in leaves)
        name = getattr(func, "__name__", str(func))
        if name in RANDOM:
            if names_foreign:
                self.violations.append(f"{name} draws on the device (its generator differs from the CPU's): "
                                       f"{_where()}")
            if self.seeded and kwargs.get("generator") is None and not any(isinstance(a, torch.Generator)
                                                                           for a in args):
                self.violations.append(f"{name} draws without the attack's generator: {_where()}")
        args, kwargs = pytree.tree_map(_to_cpu, (args, kwargs))
        out = func(*args, **kwargs)
        if name in ("to", "cuda", "cpu") and (names_device or name != "to"):
            on = name == "cuda" or (name == "to" and names_foreign)
            if out is args[0] and on != self.on_device(out):
                out = out.clone()  # on the CPU `.to(cpu)` returns the tensor itself: the move makes a new one
        elif name == "to" and len(tensors) > 1:  # t.to(other)
            on = self.on_device(tensors[1])
        elif not tensors:  # a factory: where its device argument says
            on = names_foreign
        else:
            significant = [self.on_device(t) for t in tensors if t.ndim > 0 or self.on_device(t)]
            if len(set(significant)) > 1:
                self.violations.append(f"{name} mixes the device's tensors with CPU tensors: {_where()}")
            on = any(significant)
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.tags[t] = on
        return out
