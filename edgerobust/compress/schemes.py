"""Sparsity schemes: which weights a network may keep, and the Euclidean projection Π_S onto that set.

A *target* is one unit of bookkeeping. For `irregular` and `column` it is one layer's weight. For `filter` and
`channel` it is a torch-pruning dependency group: the conv rows, biases, BatchNorm affine parameters, depthwise
filters and consumers' input columns that carry one channel, coupled across residual additions. A pruned channel
zeroes every slice of its group, so its activation is exactly zero and physical removal changes no output.
`filter` scores a channel by its producers' slices (the reshaped weight's rows); `channel` by its consumers'
input slices.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch_pruning as tp
from torch import Tensor, nn

from ..compute_device import placement
from ..errors import EdgeRobustError
from ..models.mode import eval_mode
from ..registry import Registry

PRUNABLE = (nn.Conv2d, nn.Linear)


# -- top-k: the projection's selection (Π_S keeps each target's k units of largest squared norm) ---------------
def keep_k(units: int, keep: float, round_to: int = 1) -> int:
    """How many of `units` a keep ratio leaves (at least one, so no layer is cut off entirely); with `round_to` > 1
    the nearest multiple of it, at least `round_to` and at most `units` (channel counts the kernels' blocks like:
    onnxruntime's x86 int8 convolution wants 16 or more output channels, its fp32 NCHWc kernels blocks of 8/16)."""
    k = min(units, max(1, round(keep * units)))
    if round_to > 1:
        k = min(units, max(round_to, round_to * round(k / round_to)))
    return k


def top_units(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the k largest scores (ties broken by position, deterministically)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[torch.topk(scores.flatten(), k, sorted=False).indices] = True
    return keep


# -- targets ----------------------------------------------------------------------------------------------------
@dataclass
class Slice:
    """Positions `index` along `dim` of parameter `param`; `unit[i]` is the prunable unit position i belongs to."""

    param: str
    dim: int
    index: Tensor
    unit: Tensor
    scored: bool


@dataclass
class Target:
    name: str  # the first layer it covers, in model order
    layers: list[str]  # every Conv2d / Linear whose weights it scores
    units: int
    depth: int
    kind: str  # element | column | channel
    slices: list[Slice] = field(default_factory=list)

    @property
    def scored_params(self) -> list[str]:
        return sorted({s.param for s in self.slices if s.scored})

    def unit_size(self, values: dict[str, Tensor]) -> int:
        """Scored elements per unit (to compare units of different layers under a global keep ratio)."""
        total = sum(_moved(values[s.param], s.dim)[s.index].numel() if s.dim >= 0 else values[s.param].numel()
                    for s in self.slices if s.scored)
        return max(1, total // self.units)

    def scores(self, values: dict[str, Tensor]) -> Tensor:
        """Squared L2 norm of each unit over the scored slices: the projection keeps the largest."""
        if self.kind == "element":
            return values[self.slices[0].param].detach().pow(2).flatten()
        if self.kind == "column":
            weight = values[self.slices[0].param].detach()
            return weight.reshape(weight.shape[0], -1).pow(2).sum(0)
        first = values[next(s.param for s in self.slices if s.scored)]  # indices live on the CPU, with the plan
        device = first.device
        out = torch.zeros(self.units, device=device, dtype=first.dtype)
        for s in self.slices:
            if s.scored:
                rows = _moved(values[s.param].detach(), s.dim)[s.index.to(device)]
                out.index_add_(0, s.unit.to(device), rows.reshape(len(s.index), -1).pow(2).sum(1))
        return out

    def masks(self, keep: Tensor, values: dict[str, Tensor], scored_only: bool) -> dict[str, Tensor]:
        """Boolean masks (True = kept) of the parameters this target touches, for the kept units `keep`."""
        if self.kind == "element":
            param = self.slices[0].param
            return {param: keep.view_as(values[param])}
        if self.kind == "column":
            param = self.slices[0].param
            weight = values[param]
            return {param: keep[None, :].expand(weight.shape[0], -1).reshape(weight.shape)}
        out: dict[str, Tensor] = {}
        for s in self.slices:
            if scored_only and not s.scored:
                continue
            mask = out.get(s.param)
            if mask is None:
                mask = torch.ones_like(values[s.param], dtype=torch.bool)
            index, unit = s.index.to(mask.device), s.unit.to(keep.device)
            _moved(mask, s.dim)[index] &= _expand_to(keep[unit].to(mask.device), _moved(mask, s.dim)[index])
            out[s.param] = mask
        return out


def _moved(tensor: Tensor, dim: int) -> Tensor:
    return tensor.movedim(dim, 0) if dim else tensor


def _expand_to(keep: Tensor, like: Tensor) -> Tensor:
    return keep.view(-1, *([1] * (like.ndim - 1))).expand_as(like)


def output_layer(model: nn.Module) -> str:
    """The last Conv2d / Linear in module order: it produces the logits, so its filters are the classes."""
    names = [name for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not names:
        raise EdgeRobustError("the model has no prunable layers (no Conv2d or Linear); nothing to compress")
    return names[-1]


def _layer_target(name: str, module: nn.Module, depth: int, kind: str) -> Target:
    weight = module.weight
    units = weight.numel() if kind == "element" else weight.reshape(weight.shape[0], -1).shape[1]
    whole = torch.arange(0)
    return Target(name, [name], units, depth, kind, [Slice(f"{name}.weight", -1, whole, whole, True)])


def _param_dims(name: str, module: nn.Module, out_channels: bool) -> list[tuple[str, int]]:
    """The (parameter, dim) slices a channel occupies in `module`, as producer (out) or consumer (in)."""
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        if module.groups > 1 and not depthwise:
            raise EdgeRobustError(f"layer '{name}' is a grouped convolution (groups={module.groups}); structured "
                                  "schemes support plain and depthwise convolutions only; use --scheme irregular")
        dims = [("weight", 0)] + ([("bias", 0)] if module.bias is not None else [])
        return dims if out_channels or depthwise else [("weight", 1)]
    if isinstance(module, nn.Linear):
        return ([("weight", 0)] + ([("bias", 0)] if module.bias is not None else [])) if out_channels \
            else [("weight", 1)]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if not module.affine:
            raise EdgeRobustError(f"layer '{name}' is a BatchNorm without affine parameters: a removed channel "
                                  "would not be exactly zero; use --scheme irregular")
        return [("weight", 0), ("bias", 0)]
    if any(True for _ in module.parameters(recurse=False)):
        raise EdgeRobustError(f"layer '{name}' ({type(module).__name__}) cannot be pruned structurally; "
                              "use --scheme irregular")
    return []


def group_slices(group, graph, names: dict[nn.Module, str], score_producers: bool
                 ) -> tuple[dict[tuple[str, int], Slice], list[str], int]:
    """The parameter slices of one torch-pruning group, the layers it scores, and its channel count."""
    slices: dict[tuple[str, int], Slice] = {}
    scored_layers: list[str] = []
    units = 0
    for item in group:
        module = item.dep.target.module
        if not isinstance(module, nn.Module) or module not in names:
            continue  # functional ops (add, flatten) carry no parameters
        name = names[module]
        is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
        scored = is_out == score_producers
        roots = torch.as_tensor(item.root_idxs, dtype=torch.long)
        units = max(units, int(roots.max()) + 1) if len(roots) else units
        for pname, dim in _param_dims(name, module, is_out):
            key = (f"{name}.{pname}", dim)
            if key in slices:
                slices[key].scored |= scored
            else:
                slices[key] = Slice(key[0], dim, torch.as_tensor(item.idxs, dtype=torch.long), roots, scored)
        if scored and isinstance(module, PRUNABLE) and name not in scored_layers:
            scored_layers.append(name)
    return slices, scored_layers, units


def dependency_groups(model: nn.Module, example: Tensor):
    """torch-pruning's dependency graph of `model` and its channel groups (the output layer left whole)."""
    output = model.get_submodule(output_layer(model))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    return graph, list(graph.get_all_groups(ignored_layers=[output], root_module_types=PRUNABLE))


def _group_targets(model: nn.Module, example: Tensor, score_producers: bool) -> list[Target]:
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    graph, groups = dependency_groups(model, example)
    targets = []
    for group in groups:
        slices, scored_layers, units = group_slices(group, graph, names, score_producers)
        if not scored_layers:
            continue
        scored_layers.sort(key=order.__getitem__)
        targets.append(Target(scored_layers[0], scored_layers, units, order[scored_layers[0]],
                              "channel", list(slices.values())))
    return sorted(targets, key=lambda t: t.depth)


# -- the registry -------------------------------------------------------------------------------------------------
TargetBuilder = Callable[[nn.Module, Tensor], list[Target]]
SCHEMES: Registry[TargetBuilder] = Registry("pruning scheme")


def _layers(model: nn.Module) -> list[tuple[int, str, nn.Module]]:
    return [(i, n, m) for i, (n, m) in enumerate(model.named_modules()) if isinstance(m, PRUNABLE)]


@SCHEMES.register("irregular", "top-k weights by magnitude in every Conv2d / Linear (no speed-up on dense runtimes)")
def irregular_targets(model: nn.Module, example: Tensor) -> list[Target]:
    return [_layer_target(name, m, i, "element") for i, name, m in _layers(model)]


@SCHEMES.register("column", "top-k columns of each reshaped (out, in·kh·kw) weight by L2 norm (Ye et al.)")
def column_targets(model: nn.Module, example: Tensor) -> list[Target]:
    return [_layer_target(name, m, i, "column") for i, name, m in _layers(model)]


@SCHEMES.register("filter", "top-k filters (rows of the reshaped weight) by L2 norm, coupled across BN / residuals; "
                  "removable")
def filter_targets(model: nn.Module, example: Tensor) -> list[Target]:
    return _group_targets(model, example, score_producers=True)


@SCHEMES.register("channel", "top-k input channels of each layer by L2 norm, coupled across BN / residuals; removable")
def channel_targets(model: nn.Module, example: Tensor) -> list[Target]:
    return _group_targets(model, example, score_producers=False)


STRUCTURED = ("filter", "channel")


# -- a plan: targets + keep ratios ---------------------------------------------------------------------------------
def check_keep(keep: float, what: str = "keep ratio") -> float:
    if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
        raise EdgeRobustError(f"{what} {keep} is outside (0, 1]; e.g. 0.5 keeps half the weights, 1 keeps all")
    return float(keep)


def funnel_ratios(keep: float, n: int, spread: float = 0.5) -> list[float]:
    """Keep ratios strictly falling with depth whose mean is `keep` (Marshall's funnel scheme)."""
    if n == 1:
        return [keep]
    spread = min(spread, 1 / keep - 1)
    if spread <= 0:
        raise EdgeRobustError("the funnel scheme needs a keep ratio below 1 (density must fall with depth)")
    return [keep * (1 + spread * (1 - 2 * i / (n - 1))) for i in range(n)]


@dataclass
class PruningPlan:
    """The targets of one scheme over one model and the keep ratio of each; `project` is Π_S."""

    scheme: str
    targets: list[Target]
    ratios: list[float]
    global_keep: float | None = None  # set: one ranking across all targets instead of per-target top-k
    round_to: int = 1  # kept units per target rounded to a multiple of this (keep_k)

    def scored_params(self) -> list[str]:
        return sorted({p for t in self.targets for p in t.scored_params})

    def kept_units(self, values: dict[str, Tensor]) -> list[Tensor]:
        scores = [t.scores(values) for t in self.targets]
        if self.global_keep is None:
            return [top_units(s, keep_k(t.units, r, self.round_to))
                    for t, s, r in zip(self.targets, scores, self.ratios, strict=True)]
        # Global ranking compares mean squared magnitude per element, so wide and narrow units compete fairly;
        # each target's best unit is always kept so no layer is cut off entirely.
        normed = [s / t.unit_size(values) for t, s in zip(self.targets, scores, strict=True)]
        for s in normed:
            s[torch.argmax(s)] = math.inf
        flat = torch.cat(normed)
        chosen = top_units(flat, keep_k(len(flat), self.global_keep))
        return list(torch.split(chosen, [len(s) for s in normed]))

    def masks(self, values: dict[str, Tensor], scored_only: bool = False) -> dict[str, Tensor]:
        """Masks of the parameters to keep; a parameter touched by several targets keeps the intersection."""
        out: dict[str, Tensor] = {}
        for target, keep in zip(self.targets, self.kept_units(values), strict=True):
            for param, mask in target.masks(keep, values, scored_only).items():
                out[param] = out[param] & mask if param in out else mask.clone()
        return out

    def project(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Π_S: the nearest point of the constraint set to `values` (scored parameters only)."""
        return {p: values[p] * m for p, m in self.masks(values, scored_only=True).items()}

    def relaxed(self, fraction: float) -> PruningPlan:
        """The plan `fraction` of the way from keeping everything (0) to its own keep ratios (1), for a keep
        ratio that falls over training (Marshall)."""
        f = min(max(float(fraction), 0.0), 1.0)

        def lerp(ratio: float) -> float:
            return 1.0 - (1.0 - ratio) * f

        return replace(self, ratios=[lerp(r) for r in self.ratios],
                       global_keep=None if self.global_keep is None else lerp(self.global_keep))

    def mean_keep(self) -> float:
        return self.global_keep if self.global_keep is not None else sum(self.ratios) / len(self.ratios)

    def describe(self) -> dict:
        return {"scheme": self.scheme, "global_keep": self.global_keep,
                "targets": [{"name": t.name, "layers": t.layers, "units": t.units, "keep": r}
                            for t, r in zip(self.targets, self.ratios, strict=True)]}


def build_plan(model: nn.Module, input_shape: Sequence[int], scheme: str = "filter", keep: float = 0.5, *,
               global_keep: bool = False, funnel: bool = False, layers: Sequence[str] | None = None,
               layer_keep: dict[str, float] | None = None, round_to: int = 1) -> PruningPlan:
    """Targets of `scheme` over `model` restricted to `layers` (fnmatch patterns), with their keep ratios; kept
    units rounded to multiples of `round_to` (structured schemes only)."""
    builder = SCHEMES.get(scheme)
    check_keep(keep)
    output_layer(model)  # a model without Conv2d / Linear layers fails here with one line
    if global_keep and funnel:
        raise EdgeRobustError("choose either a global keep ratio or the funnel, not both")
    check_round_to(round_to, scheme, global_keep)
    with eval_mode(model):
        where = placement(model)  # torch-pruning traces the model: its example input on the model's device
        targets = builder(model, torch.zeros(1, *input_shape, device=where.device, dtype=where.dtype))
    if layers:
        _check_named_layers(model, scheme, targets, layers)
        targets = [t for t in targets if any(fnmatch.fnmatchcase(n, p) for n in t.layers for p in layers)]
    if not targets:
        where = f" matching {', '.join(layers)}" if layers else ""
        raise EdgeRobustError(f"the model has no prunable layers{where} for the '{scheme}' scheme; "
                              "choose other --layers or another --scheme")
    ratios = funnel_ratios(keep, len(targets)) if funnel else [keep] * len(targets)
    for pattern, ratio in (layer_keep or {}).items():
        check_keep(ratio, f"keep ratio for '{pattern}'")
        ratios = [ratio if any(fnmatch.fnmatchcase(n, pattern) for n in t.layers) else r
                  for t, r in zip(targets, ratios, strict=True)]
    return PruningPlan(scheme, targets, ratios, keep if global_keep else None, round_to)


def check_round_to(round_to: int, scheme: str, global_keep: bool = False) -> int:
    """A channel multiple for a structured per-layer plan; anything else is refused with the reason."""
    if not (isinstance(round_to, int) and round_to >= 1):
        raise EdgeRobustError(f"round_to must be a whole number >= 1 (e.g. 16), got {round_to}")
    if round_to > 1 and scheme not in STRUCTURED:
        raise EdgeRobustError(f"round_to rounds kept channel counts; the '{scheme}' scheme removes no channels "
                              "(use --scheme filter or channel, or --round-to 1)")
    if round_to > 1 and global_keep:
        raise EdgeRobustError("round_to applies to per-layer keep ratios; use --per-layer or --round-to 1")
    return round_to


def _check_named_layers(model: nn.Module, scheme: str, targets: list[Target], patterns: Sequence[str]) -> None:
    """An exact layer name the scheme cannot take is an error that says why (wildcards may match nothing)."""
    covered = {n for t in targets for n in t.layers}
    modules = dict(model.named_modules())
    for pattern in patterns:
        if any(ch in pattern for ch in "*?[") or pattern in covered:
            continue
        if pattern not in modules:
            raise EdgeRobustError(f"the model has no layer '{pattern}'; layer names look like "
                                  f"'{next(iter(n for _, n, _ in _layers(model)), 'net.0')}'")
        module = modules[pattern]
        if not isinstance(module, PRUNABLE):
            raise EdgeRobustError(f"layer '{pattern}' is a {type(module).__name__}; only Conv2d and Linear layers "
                                  f"take the '{scheme}' scheme")
        if scheme == "filter" and pattern == output_layer(model):
            raise EdgeRobustError(f"layer '{pattern}' is the output layer: its filters are the classes, so it "
                                  "cannot take the 'filter' scheme")
        if scheme == "channel":
            raise EdgeRobustError(f"layer '{pattern}' cannot take the 'channel' scheme: its input channels are the "
                                  "network's input image")
        raise EdgeRobustError(f"layer '{pattern}' ({type(module).__name__}) cannot take the '{scheme}' scheme")
