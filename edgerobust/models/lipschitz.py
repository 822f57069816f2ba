"""Lipschitz control: per-layer L2 operator norms and the global product bound (Peconi, Lipschitz chapter).

A layer's norm is found by power iteration on the operator itself (a convolution is applied with `conv2d` and
its adjoint with `conv_transpose2d` on the layer's real input shape, never the reshaped kernel, whose norm is a
different number). Beside each estimate stands a sound upper bound: the exact largest singular value for a
linear layer and, for a convolution, the largest singular value over the frequencies of the circular
convolution on a grid that holds the padded input (zero padding and striding only restrict that operator).
BatchNorm is taken in eval mode (max |γ/√(var+ε)|), a residual block is bounded by L(branch) + L(shortcut), an
activation by its largest slope (a KAF by its own `lipschitz_constant`). The global bound L ≤ ∏ L_i is an
upper bound on ‖f(x) − f(y)‖₂ / ‖x − y‖₂, not the smallest such L.

The same code serves training (the Σ log σ_i regulariser and spectral normalisation, training/lipschitz_control.py)
and certification (a margin m certifies an L2 radius m / (√2 · L)).

Public API (stable: certify/ builds its Lipschitz certificate on it; change it only with its callers):
* `lipschitz_bound(model, input_shape, *, iterations=200, tol=1e-6) -> LipschitzBound`: the model in eval mode on
  per-example inputs of `input_shape` (C, H, W); raises EdgeRobustError naming a layer it has no rule for;
* `LipschitzBound`: `bound` (product of estimates), `upper` (sound: product of per-layer upper bounds, residual
  blocks as sums), `layers` (one `LayerNorm(name, kind, norm, upper)` per layer, in forward order),
  `certified_radius(margin, sound=True)` = margin / (√2·L), `describe()` (a JSON-ready dict);
* the operator pieces: `conv_operator(conv, weight=None) -> (A, Aᵀ)`, `power_iteration(forward, adjoint, in_shape,
  ...) -> (σ, v)` (v: the converged right singular vector, reusable as the next start), `conv_norm`,
  `conv_upper_bound`, `batchnorm_norm`, `input_shapes`, and `ACTIVATION_SLOPES` (module type -> max |f′|; a module
  with its own `lipschitz_constant()`, like KAF or kwta's inf, is asked instead).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..compute_device import placement
from ..errors import EdgeRobustError
from .normalize import Normalize
from .probe import input_shapes

__all__ = ["ACTIVATION_SLOPES", "LayerNorm", "LipschitzBound", "batchnorm_norm", "conv_norm", "conv_operator",
           "conv_upper_bound", "input_shapes", "lipschitz_bound", "power_iteration"]

# activation slopes: the largest |f′| over the real line (GELU's max of Φ(x) + xφ(x) is at x = √2; SiLU's at the
# root of 1 + e^{-x}(1 - x) ... ≈ 2.3994); each is a constant of the function, computed once here
_GELU_MAX = 0.5 * (1 + math.erf(1.0)) + math.sqrt(2) * math.exp(-1.0) / math.sqrt(2 * math.pi)
_SILU_X = 2.399357280515
_SILU_MAX = (1 / (1 + math.exp(-_SILU_X))) * (1 + _SILU_X * (1 - 1 / (1 + math.exp(-_SILU_X))))
ACTIVATION_SLOPES: dict[type, Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0, nn.ReLU6: lambda m: 1.0, nn.Identity: lambda m: 1.0, nn.Flatten: lambda m: 1.0,
    nn.Dropout: lambda m: 1.0, nn.Tanh: lambda m: 1.0, nn.Hardtanh: lambda m: 1.0, nn.Softplus: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25, nn.LeakyReLU: lambda m: max(1.0, abs(m.negative_slope)),
    nn.ELU: lambda m: max(1.0, m.alpha), nn.GELU: lambda m: _GELU_MAX, nn.SiLU: lambda m: _SILU_MAX,
}


@dataclass
class LayerNorm:
    """One layer's L2 Lipschitz constant: `norm` (power-iteration estimate, or exact) and a sound `upper`."""
    name: str
    kind: str
    norm: float
    upper: float


@dataclass
class LipschitzBound:
    bound: float  # the global product bound from the estimates
    upper: float  # the same composition of the sound per-layer upper bounds
    layers: list[LayerNorm] = field(default_factory=list)

    def certified_radius(self, margin: float | torch.Tensor, sound: bool = True):
        """L2 radius certified by a top-two logit margin: m / (√2 · L)."""
        return margin / (math.sqrt(2) * (self.upper if sound else self.bound))

    def describe(self) -> dict:
        return {"bound": self.bound, "upper": self.upper,
                "layers": [vars(layer) for layer in self.layers]}


# -- linear operators ------------------------------------------------------------------------------------------
def conv_operator(conv: nn.Conv2d, weight: torch.Tensor | None = None):
    """(A, Aᵀ) of a Conv2d without its bias, as functions of a batch of inputs / outputs."""
    w = conv.weight if weight is None else weight
    kw = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}
    if isinstance(conv.padding, str):
        raise EdgeRobustError(f"Lipschitz bound: {conv} uses padding='{conv.padding}'; use integer padding")

    def forward(x):
        return F.conv2d(x, w, None, **kw)

    def adjoint(y, in_shape):
        # conv_transpose2d's default size drops the rows/columns a stride leaves over; output_padding restores
        # them (they are reached by the last window or by none; the transpose fills them either way)
        extra = [in_shape[-2 + i] - ((y.shape[-2 + i] - 1) * conv.stride[i] - 2 * conv.padding[i]
                                     + conv.dilation[i] * (w.shape[-2 + i] - 1) + 1) for i in range(2)]
        return F.conv_transpose2d(y, w, None, stride=conv.stride, padding=conv.padding, output_padding=tuple(extra),
                                  dilation=conv.dilation, groups=conv.groups)

    return forward, adjoint


def power_iteration(forward: Callable, adjoint: Callable | None, in_shape: Sequence[int], *, iterations: int = 200,
                    tol: float = 1e-6, seed: int = 0, device=None, dtype=torch.float64,
                    v: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """σ_max of a linear operator by power iteration on AᵀA; the adjoint defaults to autograd's. Returns (σ, v)."""
    if v is None:  # the start is drawn on the CPU and moved, so every device starts from the same vector
        v = torch.randn(1, *in_shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)
    if adjoint is None:
        def adjoint(y, shape):
            x = torch.zeros(1, *shape, dtype=y.dtype, device=y.device, requires_grad=True)
            with torch.enable_grad():
                return torch.autograd.grad(forward(x), x, y)[0]
    v = v / v.norm()
    sigma = 0.0
    with torch.no_grad():
        for _ in range(iterations):
            u = forward(v)
            new = float(u.norm())
            w = adjoint(u, v.shape[1:])
            norm = w.norm()
            if norm == 0:
                return 0.0, v
            v = w / norm
            if abs(new - sigma) <= tol * max(new, 1e-30):
                sigma = new
                break
            sigma = new
        sigma = float(forward(v).norm())
    return sigma, v


def conv_upper_bound(conv: nn.Conv2d, in_shape: Sequence[int]) -> float:
    """A sound bound on ‖conv‖₂: max over frequencies of σ_max of the kernel DFT, on a grid holding the padded input."""
    w = conv.weight.detach().to(torch.float64)
    groups = conv.groups
    cout, cin_g, kh, kw = w.shape
    ph, pw = conv.padding
    n_h = in_shape[-2] + 2 * ph + conv.dilation[0] * (kh - 1)
    n_w = in_shape[-1] + 2 * pw + conv.dilation[1] * (kw - 1)
    dilated = torch.zeros(cout, cin_g, conv.dilation[0] * (kh - 1) + 1, conv.dilation[1] * (kw - 1) + 1,
                          dtype=w.dtype, device=w.device)
    dilated[:, :, ::conv.dilation[0], ::conv.dilation[1]] = w
    spectrum = torch.fft.fft2(dilated, s=(n_h, n_w))  # (cout, cin/g, n_h, n_w)
    spectrum = spectrum.reshape(groups, cout // groups, cin_g, n_h * n_w).permute(0, 3, 1, 2)
    return float(torch.linalg.matrix_norm(spectrum, ord=2).max())


# -- the walk ----------------------------------------------------------------------------------------------------


class _Walk:
    def __init__(self, shapes, iterations: int, tol: float):
        self.shapes, self.iterations, self.tol = shapes, iterations, tol
        self.layers: list[LayerNorm] = []

    def leaf(self, name, module, norm, upper=None) -> tuple[float, float]:
        upper = norm if upper is None else upper
        self.layers.append(LayerNorm(name, type(module).__name__, norm, upper))
        return norm, upper

    def chain(self, name, modules) -> tuple[float, float]:
        norm = upper = 1.0
        for child_name, child in modules:
            n, u = self.bound(f"{name}.{child_name}" if name else child_name, child)
            norm, upper = norm * n, upper * u
        return norm, upper

    def bound(self, name: str, m: nn.Module) -> tuple[float, float]:
        if m not in self.shapes and not isinstance(m, nn.Sequential):
            return 1.0, 1.0  # never called in the forward (e.g. an unused shortcut): not on any path
        for kind, rule in BLOCK_RULES.items():
            if isinstance(m, kind):
                return rule(self, name, m)
        if isinstance(m, nn.Sequential) or type(m) in CHAIN_MODULES:
            return self.chain(name, m.named_children())
        if hasattr(m, "lipschitz_constant"):
            return self.leaf(name, m, float(m.lipschitz_constant()))
        if type(m) in ACTIVATION_SLOPES:
            return self.leaf(name, m, ACTIVATION_SLOPES[type(m)](m))
        if isinstance(m, Normalize):
            return self.leaf(name, m, float((1 / m.std.abs()).max()))
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return self.leaf(name, m, batchnorm_norm(m))
        if isinstance(m, nn.Conv2d):
            norm = conv_norm(m, self.shapes[m], iterations=self.iterations, tol=self.tol)
            return self.leaf(name, m, norm, max(norm, conv_upper_bound(m, self.shapes[m])))
        if isinstance(m, nn.Linear):
            w = m.weight.detach().to(torch.float64)
            norm, _ = power_iteration(lambda x: x @ w.T, lambda y, s: y @ w, (w.shape[1],),
                                      iterations=self.iterations, tol=self.tol, device=w.device)
            return self.leaf(name, m, norm, max(norm, float(torch.linalg.matrix_norm(w, ord=2))))
        if isinstance(m, (nn.MaxPool2d, nn.MaxPool1d)):
            k = _pair(m.kernel_size)
            s = _pair(m.stride if m.stride is not None else m.kernel_size)
            d = _pair(m.dilation)
            # each input lies in at most ⌈k_eff/s⌉ windows per axis; |max x − max y| ≤ max |x − y| over a window
            windows = math.prod(math.ceil((d[i] * (k[i] - 1) + 1) / s[i]) for i in range(2))
            return self.leaf(name, m, math.sqrt(windows))
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            shape = self.shapes[m]
            fn = lambda x: m(x)  # noqa: E731 - a linear map; its adjoint comes from autograd
            norm, _ = power_iteration(fn, None, shape, iterations=self.iterations, tol=self.tol,
                                      device=placement(m).device if list(m.parameters()) else None,
                                      dtype=torch.float64)
            return self.leaf(name, m, norm, _avgpool_upper(m, shape))
        raise EdgeRobustError(f"Lipschitz bound: no rule for layer '{name}' ({type(m).__name__}); supported: "
                              "Conv2d, Linear, BatchNorm, pooling, Sequential, residual blocks and the activations "
                              f"{', '.join(sorted(t.__name__ for t in ACTIVATION_SLOPES))}, KAF")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _avgpool_upper(m: nn.Module, shape) -> float:
    """Averaging over windows: ‖A‖₂ ≤ √(‖A‖₁‖A‖∞) with ‖A‖∞ = 1 and ‖A‖₁ the largest column sum."""
    x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        column_sums = torch.autograd.grad(m(x).sum(), x)[0]
    return math.sqrt(float(column_sums.max()))


def batchnorm_norm(bn: nn.modules.batchnorm._BatchNorm) -> float:
    """Eval-mode BatchNorm is diagonal: max |γ / √(running_var + ε)|."""
    if bn.running_var is None:
        raise EdgeRobustError(f"Lipschitz bound: {bn} keeps no running statistics; its eval mode is undefined")
    scale = torch.ones_like(bn.running_var) if bn.weight is None else bn.weight.detach()
    return float((scale.double() / torch.sqrt(bn.running_var.double() + bn.eps)).abs().max())


def conv_norm(conv: nn.Conv2d, in_shape: Sequence[int], iterations: int = 200, tol: float = 1e-6,
              seed: int = 0) -> float:
    """‖conv‖₂ on inputs of `in_shape` (C, H, W) by power iteration with conv2d / conv_transpose2d."""
    w = conv.weight.detach().to(torch.float64)
    forward, adjoint = conv_operator(conv, w)
    norm, _ = power_iteration(forward, adjoint, in_shape, iterations=iterations, tol=tol, seed=seed,
                              device=w.device)
    return norm


# -- residual blocks and chains ---------------------------------------------------------------------------------
def _resnet_basic(walk: _Walk, name: str, m) -> tuple[float, float]:
    branch = walk.chain(name, [(n, getattr(m, n)) for n in ("conv1", "bn1", "relu1", "conv2", "bn2")])
    skip = walk.bound(f"{name}.shortcut", m.shortcut)
    out = walk.bound(f"{name}.relu2", m.relu2)
    return out[0] * (branch[0] + skip[0]), out[1] * (branch[1] + skip[1])


def _preact(walk: _Walk, name: str, m) -> tuple[float, float]:
    pre = walk.chain(name, [("bn1", m.bn1), ("relu1", m.relu1)])
    branch = walk.chain(name, [(n, getattr(m, n)) for n in ("conv1", "bn2", "relu2", "conv2")])
    if m.shortcut is not None:  # skip = shortcut(pre(x)): both paths start after the pre-activation
        skip = walk.bound(f"{name}.shortcut", m.shortcut)
        return pre[0] * (branch[0] + skip[0]), pre[1] * (branch[1] + skip[1])
    return pre[0] * branch[0] + 1.0, pre[1] * branch[1] + 1.0


def _inverted_residual(walk: _Walk, name: str, m) -> tuple[float, float]:
    branch = walk.bound(f"{name}.conv", m.conv)
    return (branch[0] + 1.0, branch[1] + 1.0) if m.use_residual else branch


def _register_blocks() -> tuple[dict, set]:
    from .mobilenetv2 import InvertedResidual, MobileNetV2
    from .preact_resnet import PreActBlock, PreActResNet
    from .resnet_cifar import BasicBlock, CifarResNet

    # modules whose forward calls their children once each, in registration order
    return ({BasicBlock: _resnet_basic, PreActBlock: _preact, InvertedResidual: _inverted_residual},
            {CifarResNet, PreActResNet, MobileNetV2})


BLOCK_RULES, CHAIN_MODULES = _register_blocks()


def lipschitz_bound(model: nn.Module, input_shape: Sequence[int], *, iterations: int = 200,
                    tol: float = 1e-6) -> LipschitzBound:
    """The global L2 Lipschitz bound of `model` (eval mode) on inputs of `input_shape`, with each layer's norm."""
    walk = _Walk(input_shapes(model, input_shape), iterations, tol)
    norm, upper = walk.bound("", model)
    return LipschitzBound(norm, upper, walk.layers)
