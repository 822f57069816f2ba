"""Rounding bounds for comparing two float64 computations of one network that differ only in summation order.

First-order error analysis (Higham, Accuracy and Stability of Numerical Algorithms, §3): the rounding error of a
network's output is a sum of terms each proportional to the unit roundoff u, so it is A·u for an amplification A
that depends on the network and the input but not on the precision. Running the same network in float32 and in
float64 measures A at this input: |f32 − f64| ≈ A·u32. A float64 computation in any other summation order is
then within about A·u64 = |f32 − f64|·2**-29 of the exact value; the bound below allows 2**10 times that (another
order draws other rounding errors, and the float32 run may cancel luckily), plus a floor of L·n·u64·max|f| for an
input where float32 happens to be exact. A real error (a live channel removed, a wrong device or dtype) changes
the outputs by far more, while the bound holds on any CPU and for any kernel the library picks.
(The rigorous a-priori bound, the absolute network |W|…|W||x| times L·γ_n, is vacuous for deep BatchNorm nets.)
"""
from __future__ import annotations

import copy

import torch
from torch import nn

U32, U64 = 2.0 ** -24, 2.0 ** -53
SAFETY = 2.0 ** 10


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
    if isinstance(module, nn.Linear):
        return module.in_features
    return 0


@torch.no_grad()
def summation_order_bound(model: nn.Module, x, unit: float = U64) -> float:
    """Bound on max |f(x) − f'(x)| for computations f, f' of `model` with unit roundoff `unit` (U64: float64;
    U32: float32, e.g. onnxruntime against PyTorch) that differ in summation order."""
    x = torch.as_tensor(x)
    f64 = copy.deepcopy(model).eval().double()(x.double())
    f32 = copy.deepcopy(model).eval().float()(x.float()).double()
    amplification = float((f32 - f64).abs().max()) / U32
    layers = [_fan_in(m) for m in model.modules() if _fan_in(m)]
    floor = len(layers) * (max(layers) + x[0].numel()) * unit * float(f64.abs().max())
    return 2 * (SAFETY * amplification * unit + floor)
