"""Memory estimate of an exported graph at a batch size: weights + peak live activations, against a budget.

Activations are counted by liveness over the graph's node order (a tensor lives from the node that makes it to
its last consumer), which is what a runtime with buffer reuse needs at least; runtime overhead (CUDA context,
workspace, allocator slack, weight pre-packing) is not included, so the budget in a profile is what is left for
the model. benchmarks/export_zoo.py measures how far off this is for onnxruntime CPU: about 10 MiB fixed, then
0.9-2.1x the estimate (see benchmarks/results/export_zoo.json) — a floor, not a guarantee.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from ..errors import EdgeRobustError


def _tensor_bytes(value: onnx.ValueInfoProto) -> int | None:
    t = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    if any(d is None for d in dims):
        return None
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
    return int(np.prod(dims, dtype=np.int64)) * itemsize


def weight_bytes(proto: onnx.ModelProto) -> int:
    total = 0
    for init in proto.graph.initializer:
        total += numpy_helper.to_array(init).nbytes
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    total += numpy_helper.to_array(attr.t).nbytes
    return total


def activation_bytes(proto: onnx.ModelProto, batch: int) -> dict[str, int]:
    """Peak live bytes and the sum of all intermediate tensors at `batch`, from ONNX shape inference."""
    fixed = copy.deepcopy(proto)
    for value in list(fixed.graph.input) + list(fixed.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_value = batch
    inferred = shape_inference.infer_shapes(fixed, strict_mode=True)
    graph = inferred.graph
    sizes: dict[str, int] = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        size = _tensor_bytes(value)
        if size is not None:
            sizes[value.name] = size
    weights = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = index
    live = {i.name for i in graph.input if i.name not in weights}
    current = sum(sizes.get(n, 0) for n in live)
    peak = current
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name and name not in live:
                live.add(name)
                current += sizes.get(name, 0)
        peak = max(peak, current)
        for name in set(node.input) | set(node.output):
            if name in live and name not in outputs and last_use.get(name, -1) <= index:
                live.discard(name)
                current -= sizes.get(name, 0)
    total = sum(size for name, size in sizes.items() if name not in weights)
    return {"peak_bytes": int(peak), "total_bytes": int(total)}


def estimate_memory(proto: onnx.ModelProto, batch: int) -> dict[str, int]:
    weights = weight_bytes(proto)
    activations = activation_bytes(proto, batch)
    return {"batch": batch, "weights_bytes": weights, "activation_peak_bytes": activations["peak_bytes"],
            "activation_total_bytes": activations["total_bytes"],
            "estimate_bytes": weights + activations["peak_bytes"]}


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_budget(estimate: dict[str, int], budget_bytes: int, target: str) -> None:
    if estimate["estimate_bytes"] > budget_bytes:
        raise EdgeRobustError(f"the model needs about {mib(estimate['estimate_bytes'])} at batch {estimate['batch']} "
                              f"(weights {mib(estimate['weights_bytes'])} + activations "
                              f"{mib(estimate['activation_peak_bytes'])}) but target '{target}' allows "
                              f"{mib(budget_bytes)}; lower --batch or compress the model")
