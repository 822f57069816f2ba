"""Per-layer density, parameters, FLOPs and bytes of a network before and after compression."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..models.registry import flop_counter
from .schemes import PRUNABLE


def layer_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Forward FLOPs of one input per module name, by torch's own FlopCounterMode (as count_flops)."""
    counter = flop_counter(model, input_shape)
    out = {}
    for key, ops in counter.get_flop_counts().items():
        _, _, name = key.partition(".")  # keys are "<RootClass>.<module name>"
        if name:
            out[name] = int(sum(ops.values()))
    return out


def layer_stats(model: nn.Module, input_shape: Sequence[int]) -> dict[str, dict[str, Any]]:
    flops = layer_flops(model, input_shape)
    stats = {}
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE):
            continue
        params = list(module.parameters(recurse=False))
        total = sum(p.numel() for p in params)
        nonzero = sum(int(p.count_nonzero()) for p in params)
        stats[name] = {"type": type(module).__name__, "shape": list(module.weight.shape), "params": total,
                       "nonzero": nonzero, "density": nonzero / total if total else 1.0,
                       "flops": flops.get(name, 0), "bytes": sum(p.numel() * p.element_size() for p in params)}
    return stats


def model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def compression_stats(dense: nn.Module, masked: nn.Module, slim: nn.Module,
                      input_shape: Sequence[int]) -> dict[str, Any]:
    """Dense source vs. the pruned network: masked (same shapes, zeros) and slim (structures removed).

    `flops_after` is what the slim network computes on a dense runtime; `effective_flops_after` scales each layer
    by its density (what a sparse kernel could reach, the only gain irregular pruning offers).
    """
    before, masked_stats, after = (layer_stats(m, input_shape) for m in (dense, masked, slim))
    layers = []
    for name, b in before.items():
        m, a = masked_stats.get(name, b), after.get(name, {"params": 0, "nonzero": 0, "flops": 0, "bytes": 0,
                                                              "shape": []})
        layers.append({"layer": name, "type": b["type"], "shape_before": b["shape"], "shape_after": a["shape"],
                       "params_before": b["params"], "params_after": a["params"], "nonzero_after": a["nonzero"],
                       "density": m["density"], "flops_before": b["flops"], "flops_after": a["flops"],
                       "effective_flops_after": round(m["flops"] * m["density"]),
                       "bytes_before": b["bytes"], "bytes_after": a["bytes"]})
    total_before = sum(p.numel() for p in dense.parameters())
    total_after = sum(p.numel() for p in slim.parameters())
    nonzero_after = sum(int(p.count_nonzero()) for p in slim.parameters())
    flops_before, flops_after = (sum(layer_flops(m, input_shape).get(n, 0) for n in before) for m in (dense, slim))
    totals = {"params_before": total_before, "params_after": total_after, "nonzero_after": nonzero_after,
              "density": nonzero_after / total_before if total_before else 1.0,
              "flops_before": flops_before, "flops_after": flops_after,
              "effective_flops_after": sum(row["effective_flops_after"] for row in layers),
              "bytes_before": model_bytes(dense), "bytes_after": model_bytes(slim)}
    totals["flop_reduction"] = flops_before / flops_after if flops_after else float("inf")
    return {"layers": layers, "totals": totals}
