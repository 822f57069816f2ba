"""Bounds on what a network computes over a set of inputs, and in the arithmetic its artifact runs in.

The engine (engine.py) walks a graph (graph.py: the exported ONNX artifact) with one rule per operator family
(rules/: interval, backward linear and floating-point error rules), over L∞ or L2 balls in the [0, 1] box
(ball.py), under a named arithmetic model (arithmetic.py). It sits beside `models`, below training, export and
certify, so all three use one rule set: export's golden tolerance is the engine's ε = 0 error bound, `certify`
turns margins and error terms into certificates. Barmpas (ch. 7, convex outer polytope) and CROWN/IBP are the
methods; Higham (ch. 3) the floating-point model.
"""
from .arithmetic import ARITHMETIC_MODELS, Arithmetic
from .ball import Ball
from .engine import METHODS, Engine, magnitudes
from .graph import BoundError, Graph, from_onnx
from .rules import RULES, Unbounded
from .torch_graph import from_module

__all__ = ["ARITHMETIC_MODELS", "Arithmetic", "Ball", "METHODS", "Engine", "magnitudes", "BoundError", "Graph",
           "from_onnx", "from_module", "RULES", "Unbounded"]
