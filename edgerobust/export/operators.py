"""The check that refuses an ONNX graph with operators outside the target's operator set.

The sets themselves are device facts: `edgerobust.devices.operators.OPERATOR_SETS`.
"""
from __future__ import annotations

from collections import Counter

import onnx

from ..devices.operators import OPERATOR_SETS
from ..errors import EdgeRobustError


def graph_operators(model: onnx.ModelProto) -> Counter[tuple[str, str]]:
    """(domain, op_type) -> count over the graph and its subgraphs."""
    counts: Counter[tuple[str, str]] = Counter()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[(node.domain or "", node.op_type)] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    return counts


def unsupported_operators(model: onnx.ModelProto, operator_set: str) -> list[str]:
    allowed = OPERATOR_SETS.get(operator_set)
    bad = []
    for domain, op in sorted(graph_operators(model)):
        standard = domain in ("", "ai.onnx") and onnx.defs.has(op)
        if not standard or (allowed is not None and op not in allowed):
            bad.append(op if domain in ("", "ai.onnx") else f"{domain}::{op}")
    return bad


def check_operators(model: onnx.ModelProto, operator_set: str, target: str, runtime: str) -> None:
    """Refuse a graph the target's runtime cannot run, naming the operator(s)."""
    bad = unsupported_operators(model, operator_set)
    if bad:
        raise EdgeRobustError(f"target '{target}' cannot run operator{'s' if len(bad) > 1 else ''} {', '.join(bad)} "
                              f"({runtime}, operator set {operator_set}); replace the layer that produces it "
                              "or choose another target")
