"""The bound engine: one walk of the graph for the exact forward pass, IBP, CROWN, α-CROWN and the
floating-point error terms of an arithmetic model.

* `forward(x)`: every tensor in float64 (the artifact's exact real-valued function, at float64 precision);
* `bounds(ball, method)`: (lo, hi) of every tensor over the ball: IBP (Gowal et al. 2018) or CROWN (Zhang et al.
  2018, the backward linear bounds of the rules; intermediate bounds of every nonlinear operator's input by the
  same backward pass from that tensor, intersected with IBP's, so never looser than it);
* `margins(ball, labels, method)`: lower bounds of y_label - y_j for every j (the spec matrix C = e_y - e_j), the
  larger of CROWN's and IBP's (both sound); α-CROWN (Xu et al. 2021) optimises the free variables of the relaxations
  (`Rule.alpha_start`: ReLU/Clip slopes, MaxPool's window weights, the quantizer's slopes) by projected gradient
  ascent from CROWN's choice and keeps the best bound per spec, so never looser;
* `errors(mags, arithmetic)`: a bound on |computed - exact| of every tensor (the golden tolerance is its ε = 0
  case, export/tolerance.py), with |x̂| bounded by `mags` over the whole ball; raises `Unbounded` where no finite
  bound exists (γ_n infinite or a possible overflow).

Barmpas (ch. 7) certifies with Wong & Kolter's dual network, the same family with a fixed lower slope u/(u - l).
"""
from __future__ import annotations

import math

import torch

from .arithmetic import Arithmetic
from .ball import Ball
from .fast import Pass
from .graph import BoundError, Graph
from .rules import RULES, Unbounded

METHODS = ("ibp", "crown", "alpha-crown")
FAST_MODES = ("auto", "float64", "off")
DEFAULT_BUDGET = 1 << 30  # bytes of working memory for one backward pass


class Engine:
    def __init__(self, graph: Graph, what: str = "bound", fast: str = "auto"):
        """`fast`: how CROWN's backward passes run where no gradient is wanted (bounds/fast.py): "auto" (windows,
        float32 products on the CPU with their rounding term, float64 elsewhere), "float64" (windows, float64
        products: bounds equal to the float64 pass's within ~1e-12 of their magnitudes, slower) or "off" (the
        float64 pass, `backward`)."""
        if fast not in FAST_MODES:
            raise BoundError(f"unknown fast mode '{fast}'; choose one of {', '.join(FAST_MODES)}")
        self.fast = fast
        missing = sorted({n.op for n in graph.nodes if n.op not in RULES})
        if missing:
            raise BoundError(f"operator{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                             f"{'have' if len(missing) > 1 else 'has'} no {what} rule in edgerobust/bounds/rules; "
                             "add one or export without it")
        self.graph = graph
        self.rules = [RULES.get(n.op) for n in graph.nodes]
        self.producer = {n.outputs[0]: i for i, n in enumerate(graph.nodes)}
        # mixing operators (a nonlinear one counts as infinitely many) on the worst path from the input: where it is
        # at most one, interval bounds over a box are exact
        self.mixing = {graph.input: 0}
        for node, rule in zip(graph.nodes, self.rules, strict=True):
            worst = max((self.mixing.get(n, math.inf) for n in node.dynamic), default=0)
            self.mixing[node.outputs[0]] = worst + (math.inf if rule.nonlinear_at(node) else int(rule.mixes(node)))

    # --- forward and IBP ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {self.graph.input: x}
        for node, rule in zip(self.graph.nodes, self.rules, strict=True):
            values[node.outputs[0]] = rule.forward(node, *[self._get(values, node, n) for n in node.dynamic])
        return values

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[self.graph.output]

    def _get(self, table, node, name):
        if name not in table:
            raise node.refuse(f"its input {name} is neither the graph's input nor computed before it")
        return table[name]

    def bounds(self, ball: Ball, method: str = "crown", budget: int = DEFAULT_BUDGET):
        if method not in METHODS:
            raise BoundError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
        table = {self.graph.input: ball.box()}
        ibp = dict(table)  # plain IBP beside it: every bound is intersected with IBP's, so never looser even by a
        refined = {self.graph.input}  # rounding (interval rules are not monotone to the last bit in their inputs)
        for node, rule in zip(self.graph.nodes, self.rules, strict=True):
            ins = node.dynamic
            if method != "ibp" and rule.nonlinear_at(node):
                for name in ins:
                    if name not in refined:
                        wanted = rule.needs(node, *table[name])
                        table[name] = _intersect(table[name], self._tensor_bounds(name, ball, table, budget, wanted))
                        refined.add(name)
            out = node.outputs[0]
            table[out] = rule.interval(node, *[self._get(table, node, n) for n in ins])
            if method != "ibp":
                ibp[out] = rule.interval(node, *[self._get(ibp, node, n) for n in ins])
                table[out] = _intersect(table[out], ibp[out])
        return table

    # --- CROWN ----------------------------------------------------------------------------------------------------
    def backward(self, start: str, A: torch.Tensor, table, alphas=None):
        """Coefficients on the graph input and the constant of a lower bound of A·start: (A_in, bias, magnitude)."""
        S, B = A.shape[:2]
        pending = {start: A}
        bias = torch.zeros((S, B), dtype=A.dtype, device=A.device)
        magnitude = torch.zeros_like(bias)
        for i in range(self.producer[start], -1, -1):
            node, rule = self.graph.nodes[i], self.rules[i]
            a_out = pending.pop(node.outputs[0], None)
            if a_out is None:
                continue
            ins = node.dynamic
            alpha = None if alphas is None else alphas.get(node.outputs[0])
            a_ins, b, m = rule.backward(node, a_out, *[table[n] for n in ins], alpha=alpha)
            bias, magnitude = bias + b, magnitude + m
            for name, a in zip(ins, a_ins, strict=True):
                pending[name] = pending[name] + a if name in pending else a
        lo = table[self.graph.input][0]
        a_in = pending.get(self.graph.input, torch.zeros((S, *lo.shape), dtype=A.dtype, device=A.device))
        return a_in, bias, magnitude

    def _tensor_bounds(self, name, ball, table, budget, wanted):
        """CROWN bounds of the `wanted` elements [B, *shape] of one tensor; the others keep (-inf, inf) here, i.e.
        IBP's after the intersection (a relaxation depends only on wanted elements, so the final bounds are CROWN's
        all the same). Each (point, element) pair is one row of a packed batch: the specs ±e_j of that element run
        against that point's own bounds (`_Rows`), so a point pays for its own unstable neurons, not for the union
        over the batch; rows go in chunks that fit the memory budget. An affine function of the input through at
        most one mixing operator has exact interval bounds over an L∞ box, so CROWN would return IBP's there: skipped.
        """
        lo = table[name][0]
        B = lo.shape[0]
        lows = torch.full_like(lo, -math.inf).reshape(B, -1)
        highs = torch.full_like(lo, math.inf).reshape(B, -1)
        if ball.norm == "inf" and self.mixing[name] <= 1:
            return lows.reshape(lo.shape), highs.reshape(lo.shape)
        points, elements = wanted.reshape(B, -1).nonzero(as_tuple=True)
        fast = None if self._slow() else Pass(self, name, table, ball, window=True, start_terms=1)
        if fast is not None and fast.applies:
            for rows, bound in fast.lower_elements(points, elements, budget):
                p, e = points[rows], elements[rows]
                lows[p, e], highs[p, e] = bound[0].to(lo.dtype), -bound[1].to(lo.dtype)
            return lows.reshape(lo.shape), highs.reshape(lo.shape)
        widest = max(table[n][0][0].numel() for n in self._path(name))
        chunk = max(1, budget // (2 * widest * 8 * 6))
        for start in range(0, len(points), chunk):
            p, e = points[start:start + chunk], elements[start:start + chunk]
            k = len(p)
            A = torch.zeros((2, k, lo[0].numel()), dtype=lo.dtype, device=lo.device)
            A[0, torch.arange(k), e], A[1, torch.arange(k), e] = 1.0, -1.0
            bound = ball.select(p).lower(*self.backward(name, A.reshape(2, k, *lo.shape[1:]), _Rows(table, p)))
            lows[p, e], highs[p, e] = bound[0], -bound[1]
        return lows.reshape(lo.shape), highs.reshape(lo.shape)

    def _slow(self) -> bool:
        """The float64 pass: asked for, or gradients wanted (certified training differentiates through it)."""
        return self.fast == "off" or torch.is_grad_enabled()

    def _path(self, name):
        """The tensors a backward pass from `name` reads (its ancestors and itself)."""
        seen, todo = set(), [name]
        while todo:
            t = todo.pop()
            if t not in seen:
                seen.add(t)
                if t in self.producer:
                    todo.extend(self.graph.nodes[self.producer[t]].dynamic)
        return seen

    def margins(self, ball: Ball, labels: torch.Tensor, method: str = "crown", budget: int = DEFAULT_BUDGET,
                steps: int = 20, table=None):
        """Lower bounds [B, K] of y_label - y_j over the ball (+inf at j = label), and the bounds table."""
        table = self.bounds(ball, method, budget) if table is None else table
        lo, hi = table[self.graph.output]
        B, K = lo.shape
        rows = torch.arange(B, device=lo.device)
        ibp = lo[rows, labels].unsqueeze(1) - hi
        result = ibp
        if method != "ibp":
            C = torch.zeros((K, B, K), dtype=lo.dtype, device=lo.device)
            C[:, rows, labels] = 1.0
            C[torch.arange(K), :, torch.arange(K)] -= 1.0
            # a few rows per point: in float64 (bounds within ~1e-12 of the float64 pass's: a single linear layer
            # stays exact), windows and folding still spare the dense float64 pass's work
            fast = None if self._slow() else Pass(self, self.graph.output, table, ball, window=False,
                                                  start_terms=2, dtype=torch.float64)
            if fast is not None and fast.applies:  # C has two nonzeros per row
                crown = fast.lower_dense(C, budget).T.to(lo.dtype)
            else:
                crown = ball.lower(*self.backward(self.graph.output, C, table)).T
            result = torch.maximum(result, crown)
            if method == "alpha-crown":
                result = torch.maximum(result, self._alpha(ball, C, table, steps).T)
        result[rows, labels] = math.inf
        return result, table

    def _alpha(self, ball, C, table, steps):
        """α-CROWN: projected gradient ascent (Adam) on the free variables of every relaxation that has some
        (`Rule.alpha_start`: the slopes through ReLU/Clip kinks, MaxPool's window weights, the quantizer's slopes),
        from CROWN's choice, intermediate bounds fixed; the best bound per spec is kept. Every rule is sound for any
        value of its variables, so neither the optimiser nor the projection is trusted."""
        table = {name: (lo.detach(), hi.detach()) for name, (lo, hi) in table.items()}
        alphas, owners = {}, {}
        for node, rule in zip(self.graph.nodes, self.rules, strict=True):
            if not rule.nonlinear_at(node) or not node.dynamic:
                continue
            start = rule.alpha_start(node, *table[node.dynamic[0]])
            if start is not None:
                alphas[node.outputs[0]] = start.unsqueeze(0).expand(C.shape[0], *start.shape).clone().requires_grad_()
                owners[node.outputs[0]] = node, rule
        best = ball.lower(*self.backward(self.graph.output, C, table))
        if not alphas:
            return best
        optimiser = torch.optim.Adam(list(alphas.values()), lr=0.1)
        for _ in range(steps):
            with torch.enable_grad():
                bound = ball.lower(*self.backward(self.graph.output, C, table, alphas))
                optimiser.zero_grad()
                (-bound.sum()).backward()
            best = torch.maximum(best, bound.detach())
            optimiser.step()
            with torch.no_grad():
                for name, a in alphas.items():
                    node, rule = owners[name]
                    rule.alpha_project(node, a)
        with torch.no_grad():
            best = torch.maximum(best, ball.lower(*self.backward(self.graph.output, C, table, alphas)))
        return best

    # --- floating-point error terms -------------------------------------------------------------------------------
    def errors(self, mags: dict[str, torch.Tensor], ar: Arithmetic,
               ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """|computed - exact| bound of every tensor; `mags` bounds the exact |x| of every tensor over the inputs,
        `ranges` (optional, e.g. a bounds table) its signed (lo, hi): rules such as Exp need the sign."""
        errs = {self.graph.input: ar.input_roundoff * mags[self.graph.input]}
        for node, rule in zip(self.graph.nodes, self.rules, strict=True):
            ins = node.dynamic
            spans = [(-mags[n], mags[n]) if ranges is None or n not in ranges else ranges[n] for n in ins]
            e = rule.error_in(node, ar, [(lo - errs[n], hi + errs[n]) for (lo, hi), n in zip(spans, ins, strict=True)],
                              [mags[n] + errs[n] for n in ins], [errs[n] for n in ins])
            out = node.outputs[0]
            if not bool(torch.isfinite(e).all()) or bool(((mags[out] + e) > ar.largest).any()):
                raise Unbounded(f"{node.label()}")
            errs[out] = e
        return errs


class _Rows:
    """A bounds table whose batch is gathered by `index`: row r holds point index[r]'s bounds (read lazily)."""

    def __init__(self, table, index):
        self.table, self.index, self.cache = table, index, {}

    def __getitem__(self, name):
        if name not in self.cache:
            lo, hi = self.table[name]
            self.cache[name] = lo[self.index], hi[self.index]
        return self.cache[name]


def _intersect(a, b):
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])


def magnitudes(table) -> dict[str, torch.Tensor]:
    """max(|lo|, |hi|) of every tensor of a bounds table."""
    return {name: torch.maximum(lo.abs(), hi.abs()) for name, (lo, hi) in table.items()}
