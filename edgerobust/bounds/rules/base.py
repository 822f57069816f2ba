"""What a bound rule is: one operator's interval rule (IBP), backward linear rule (CROWN) and error term.

After auto_LiRPA's operator classes (Xu et al., NeurIPS 2020), kept small: a rule has

* `forward(node, *xs)`: the exact value in the engine's float64;
* `interval(node, *bounds)`: (lo, hi) of the output from (lo, hi) of each computed input (IBP, Gowal et al. 2018);
* `backward(node, A, *bounds, alpha=None)`: given a linear function A·y of the output (A: [S, B, *out]; S specs per
  point), the coefficients on each computed input and the constant, such that A·y >= Σ A_in·x_in + bias over the
  input bounds (CROWN, Zhang et al. 2018: a lower bound; upper bounds are lower bounds of -A). Returns
  (A_ins, bias, bias_magnitude) with bias, bias_magnitude of shape [S, B] (the magnitude bounds the engine's own
  float64 rounding of the constant);
* `error(node, arithmetic, mags, errs)`: the forward error bound e' of the output from e of each input and `mags`,
  bounds on the computed |x̂| of each input (Higham ch. 3, see export/tolerance.py); a rule whose error depends on
  where its input lies, not only how large it is (exp(x) for x <= 0), overrides `error_in`, which also receives
  (lo, hi) enclosing each computed input x̂.

`Linear` derives interval and backward of every affine operator from `forward` and `abs_linear` (|W|·t), the
backward by one vector-Jacobian product (differentiable: certified training may use it).
"""
from __future__ import annotations

import torch

from ...registry import Registry
from ..arithmetic import Arithmetic
from ..graph import Node

# The engine's float64 evaluation is rounded too (relative ~n·2^-53 per operation); every interval and every
# concretised bound is widened by this fraction of the magnitudes it summed. Assumes the cancellation inside the
# graph amplifies float64 rounding by less than 2^23 (depth × fan-in × condition).
SLACK = 2.0 ** -30



def float64_gamma(n: int) -> float:
    """γ_n of the engine's own float64 (Higham (3.5)): an output summing at most n terms is within γ_n·Σ|terms|."""
    return n * 2.0 ** -53 / (1 - n * 2.0 ** -53)


Bounds = tuple[torch.Tensor, torch.Tensor]


class Unbounded(Exception):
    """No finite error bound: n·u >= 1 somewhere, or a value may overflow the arithmetic's largest number."""


class Rule:
    """One operator family. `nonlinear` rules need their input bounds tightened before they relax."""

    nonlinear = False

    def mixes(self, node: Node) -> bool:
        """Whether an output element combines several input elements (not elementwise, diagonal or a move)."""
        return True

    def nonlinear_at(self, node: Node) -> bool:
        """Whether this node's relaxation needs tightened input bounds (a Mul is linear unless both are computed)."""
        return self.nonlinear

    def needs(self, node: Node, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Which input elements [B, *shape] the relaxation depends on (CROWN refines only those)."""
        return torch.ones_like(lo, dtype=torch.bool)

    def alpha_start(self, node: Node, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor | None:
        """α-CROWN's free variables of this node's relaxation (Xu et al. 2021), per point ([..., B, ...] as the rule
        reads them back, without the spec axis the engine puts in front), at CROWN's own choice; None where the
        relaxation has none. `backward` then receives them as `alpha`, for any value of which it must stay sound."""
        return None

    def alpha_project(self, node: Node, alpha: torch.Tensor) -> None:
        """Project the variables in place onto their feasible set after a gradient step (by default [0, 1])."""
        alpha.clamp_(0, 1)

    def forward(self, node: Node, *xs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def interval(self, node: Node, *bounds: Bounds) -> Bounds:
        raise NotImplementedError

    def backward(self, node: Node, A: torch.Tensor, *bounds: Bounds, alpha=None):
        raise NotImplementedError

    def error(self, node: Node, ar: Arithmetic, mags: list[torch.Tensor], errs: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def error_in(self, node: Node, ar: Arithmetic, ranges: list[Bounds], mags: list[torch.Tensor],
                 errs: list[torch.Tensor]) -> torch.Tensor:
        """`error` given also (lo, hi) enclosing each computed input x̂; by default the magnitudes suffice."""
        return self.error(node, ar, mags, errs)


RULES: Registry[Rule] = Registry("bound rule")


def register(*ops: str):
    """Register one rule instance under every ONNX operator type it handles."""
    def decorator(cls):
        instance = cls()
        for op in ops:
            RULES.register(op, (cls.__doc__ or "").strip().split("\n")[0])(instance)
        return cls
    return decorator


def _fold(t: torch.Tensor, S: int, B: int) -> torch.Tensor:
    return t.reshape(S, B, -1)


class Linear(Rule):
    """An affine operator y = L(x) + c of its computed inputs: interval and backward follow from `forward`."""

    def abs_linear(self, node: Node, *ts: torch.Tensor) -> torch.Tensor:
        """|L|·t (no constant): for a structural operator L itself."""
        return self.forward(node, *ts)

    def constant(self, node: Node, *like: torch.Tensor) -> torch.Tensor:
        """c, the output at zero inputs (batch 1)."""
        return self.forward(node, *[torch.zeros((1, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in like])

    def interval(self, node, *bounds):
        mids = [(lo + hi) / 2 for lo, hi in bounds]
        rads = [(hi - lo) / 2 for lo, hi in bounds]
        centre, radius = self.forward(node, *mids), self.abs_linear(node, *rads)
        sizes = [m.abs() + r for m, r in zip(mids, rads, strict=True)]
        magnitude = self.abs_linear(node, *sizes) + self.constant(node, *mids).abs()
        radius = radius + float64_gamma(2 * sum(m[0].numel() for m in mids) + 2) * magnitude
        # an infinite input bound makes inf - inf somewhere: unknown, i.e. unbounded (never nan)
        return (centre - radius).nan_to_num(nan=-torch.inf), (centre + radius).nan_to_num(nan=torch.inf)

    def adjoint(self, node: Node, flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor | None]:
        """Lᵀ·flat for each computed input (flat: [N, *out]; None where the output does not depend on it): by
        autograd here (one forward of zeros and its backward); dot-product rules override it with the transposed
        operator itself, half the work."""
        differentiable = torch.is_grad_enabled()  # certified training differentiates through the bound
        with torch.enable_grad():
            zs = [torch.zeros((flat.shape[0], *shape), dtype=flat.dtype, device=flat.device, requires_grad=True)
                  for shape in shapes]
            out = self.forward(node, *zs)
            return list(torch.autograd.grad(out, zs, flat, create_graph=differentiable, allow_unused=True))

    def adjoint_terms(self, node: Node) -> int | None:
        """The most products one entry of Lᵀ·A sums (Higham's n for the rounding of the fast backward pass,
        bounds/fast.py); None where not known: that pass then takes the float64 route."""
        return None

    def diagonal(self, node: Node, shape: tuple[int, ...]) -> torch.Tensor | None:
        """d with L(x) = d·x elementwise (broadcastable to [1, *shape], shape the output's without the batch) for
        operators that act on each element alone (the fast pass keeps coefficient windows through them); None
        otherwise."""
        return None

    def backward(self, node, A, *bounds, alpha=None):
        S, B = A.shape[:2]
        shapes = [tuple(lo.shape[1:]) for lo, _ in bounds]
        grads = self.adjoint(node, A.reshape(S * B, *A.shape[2:]), shapes)
        c = self.constant(node, *[lo for lo, _ in bounds]).reshape(1, 1, -1)  # the same for every row
        a_flat = _fold(A, S, B)
        bias, magnitude = (a_flat * c).sum(-1), (a_flat.abs() * c.abs()).sum(-1)
        ins = [torch.zeros((S, B, *shape), dtype=A.dtype, device=A.device) if g is None
               else g.reshape(S, B, *shape) for g, shape in zip(grads, shapes, strict=True)]
        return ins, bias, magnitude


class Structural(Linear):
    """Moves values without arithmetic (reshape, transpose, cast, concat): exact, no rounding of its own."""

    def mixes(self, node):
        return False

    def adjoint_terms(self, node):
        return 0  # a move: no arithmetic

    def error(self, node, ar, mags, errs):
        return self.forward(node, *errs)


def relaxed_backward(A, ls, lb, us, ub):
    """Backward step through an elementwise relaxation ls·x + lb <= f(x) <= us·x + ub: the lower bound of A·f(x)
    takes the lower line where A >= 0 and the upper one where A < 0 (coefficients, constant, its magnitude)."""
    pos, neg = A.clamp_min(0), A.clamp_max(0)
    const = pos * lb + neg * ub
    S, B = A.shape[:2]
    return [pos * ls + neg * us], const.reshape(S, B, -1).sum(-1), const.abs().reshape(S, B, -1).sum(-1)
