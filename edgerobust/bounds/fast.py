"""The fast backward pass of CROWN: coefficient windows, the working precision of the device, and a rigorous bound
on that precision's rounding, so the bounds stay sound and equal standard CROWN's up to that bound.

CROWN's intermediate bounds cost one backward pass per unstable neuron of every ReLU input; the margins one per
class. Two things make the straightforward pass (`Engine.backward`: dense coefficients, float64) slow, and this
pass removes both (used wherever no gradient is wanted; certified training keeps the differentiable pass):

* **Windows** (the "patches" of auto_LiRPA, Xu et al. NeurIPS 2020, §3.3). The coefficients of one neuron of a
  convolution's output are nonzero only in its receptive field, so they are kept as a window [C, h, w] at a
  per-row offset: a 2-D convolution maps a window of h rows to one of (h - 1)·s + d·(k - 1) + 1 on its input (one
  transposed convolution without padding; the positions that fall on the padding multiply zeros and are dropped,
  exactly), elementwise operators (ReLU, Clip, BatchNormalization, the input normalisation) keep it. A window as
  large as its tensor, or an operator of another kind (Flatten, Gemm), makes the coefficients dense.
* **Layout.** Rows (a point, an element, ±) share tensors where they can: windowed rows of one start position run
  together, as blocks of whole points (all channels, the wanted ones kept) where most channels are wanted, so each
  point's slopes and constants broadcast over its block instead of being gathered once per row; dense rows run a
  point at a time (ALONE rows or more). The arithmetic of each row is the same in every layout.
* **Precision.** On the CPU the products run in float32 (oneDNN and MKL kernels, about ten times float64's
  speed there); on other devices in float64 (cuDNN may use TF32 or Winograd/FFT convolutions in float32).

Soundness (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, §2.1 and eq. (3.5); u the unit
roundoff of the working precision, γ_n = n·u/(1 - n·u), η the absolute error of a product that underflows).
A backward step through a linear operator y = L·x + c (|x| <= m over the ball by the bounds table) turns computed
coefficients Â on y into Â' = fl(Lᵀ·Â) on x and a constant Â·c. Each entry of Â' sums at most n products
(`Linear.adjoint_terms`, capped by the window and the start's nonzeros), in any order, of Â with L rounded to the
working precision, so |Â' - Lᵀ·Â| <= γ_{n+1}·|L|ᵀ·|Â| + n·η entrywise. Then, for every x in the bounds,

    Â·y = Â'·x + (Lᵀ·Â - Â')·x + Â·c >= Â'·x + Â·c - ⟨|Â|, E⟩ - n·η·Σm,    E = γ_{n+2}·|L|·m,

so Â' is the coefficient of *a* valid linear lower bound once ⟨|Â|, E⟩ is subtracted: every later step bounds
that one further, whatever Â' is. A ReLU/Clip step relaxes by the sign of the computed Â (valid for any Â) and
computes Â' = Â·us + relu(Â)·(ls - us) (slopes in float64 from the bounds as in the rule, rounded once), within
γ_5·(|ls| + 2|us|)·|Â| of Â·slope: times the magnitude m of its input, that goes into its E. Every constant and the
concretisation over the L∞ box (Σ Â·lo where Â > 0, Â·hi where Â < 0) are sums computed as float32 partial sums
of at most BLOCK = 8 products, then float64: their rounding is within γ_10 of the sum of |terms|, so each lower
end moves by that (pos - E, neg + E, the box widened by γ_10·m/(1 - γ_10)). A linear step whose output a ReLU/Clip
relaxes next is folded into that step (`Pass`). A term ⟨|Â|, E⟩ computed apart is divided by 1 - γ_{N+2} (N its
entries); E is raised to at least 2^-100 and widened by η·(fan-in)·max m so its rounding to float32 and the
underflow of rounded weights stay inside it. Overflow: an infinite coefficient makes a term infinite and a NaN is
read as -inf: the bound is then vacuous, never wrong. The engine's own float64 (slopes, constants, the final sums
of a few partial sums per row) keeps its SLACK widening (rules/base.py).

The one assumption: the backend computes each entry of a convolution or matrix product as a sum of its products
in some order (direct or GEMM-based kernels, as PyTorch's CPU convolutions and MKL's GEMM do), which (3.5) covers
for any order, blocking or FMA; Winograd or FFT convolutions are not of that form, hence float64 off the CPU.

Graphs whose backward pass from a tensor is not a chain (residual sums) or reaches an operator without
`adjoint_terms`/`diagonal` (pooling, smooth activations, products) take the float64 pass (`None` here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .graph import BoundError
from .rules.activation import _Clip, _relaxation
from .rules.affine import Conv
from .rules.base import SLACK, Linear

UNIT = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}
TINY = {torch.float32: 2.0 ** -149, torch.float64: 2.0 ** -1074}  # the smallest subnormal: bounds η
FLOOR = 2.0 ** -100  # error weights are raised to this, so their float32 rounding is relative, never gradual
BLOCK = 8  # the most terms one float32 partial sum of a bound's constant holds (then float64)
BYTES_PER_ENTRY = 12  # working tensors per coefficient entry a step holds at once (A, |A|, products, gathers)
CHUNK_BYTES = 8 << 20  # one coefficient tensor of a chunk holds at most this (cifar-teacher: best of 2-32 MiB)
ALONE = 32  # a point with this many rows runs alone (its tensors broadcast); fewer rows share a chunk (gathered)


def working_dtype(device) -> torch.dtype:
    """float32 on the CPU; float64 elsewhere (TF32, Winograd and FFT convolutions break the model above)."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.float64


def gamma(n: int, u: float) -> float:
    nu = n * u
    return nu / (1 - nu) if nu < 1 else math.inf


@dataclass
class Step:
    """One node of the backward route: its kind, and whether coefficient windows pass through it."""

    index: int
    kind: str  # clip | conv | diag | linear | move (no arithmetic)
    src: str
    dst: str
    keeps: bool  # a window on the output becomes a window on the input
    entries: int  # at most this many coefficient entries per row on the output (N above)
    entries_in: int
    terms: int = 0  # n above


def plan(engine, start: str, shapes: dict[str, tuple[int, ...]], window: bool, box: bool):
    """The route of a backward pass from `start` and whether it starts windowed, or None where this pass does not
    apply. It ends at the input, or (`box`: an L∞ ball) at the first tensor that only elementwise operators separate
    from the input (the input normalisation): its interval bounds are the exact image of the box, so concretising
    there equals concretising at the input."""
    steps, name = [], start
    win = (1, 1) if window and len(shapes[start]) == 3 else None
    window = win is not None
    while name != engine.graph.input and not (box and engine.mixing.get(name) == 0):
        i = engine.producer.get(name)
        if i is None:
            return None
        node, rule = engine.graph.nodes[i], engine.rules[i]
        if len(node.dynamic) != 1:
            return None
        src = node.dynamic[0]
        out_shape, in_shape = shapes[name], shapes[src]
        try:
            kind, terms = _kind(rule, node, out_shape)
        except BoundError:
            return None
        if kind is None:
            return None
        keeps = kind in ("clip", "diag") or (kind == "conv" and len(in_shape) == 3)
        w_out = win if keeps else None
        w_in = None
        if w_out is not None:
            w_in = w_out
            if kind == "conv":
                w_in = tuple(min(_grow(w_out[j], rule.geometry(node), j), in_shape[1 + j]) for j in range(2))
        entries = out_shape[0] * w_out[0] * w_out[1] if w_out else math.prod(out_shape)
        entries_in = in_shape[0] * w_in[0] * w_in[1] if w_in else math.prod(in_shape)
        steps.append(Step(i, kind, src, name, keeps, entries, entries_in, terms))
        win, name = w_in, src
    if window and not any(s.keeps and s.entries_in < math.prod(shapes[s.src]) for s in steps):
        return plan(engine, start, shapes, False, box)  # every window covers its tensor: dense from the start
    return steps, window, name


def _kind(rule, node, out_shape):
    if isinstance(rule, _Clip):
        rule.limits(node)
        return "clip", 1
    if isinstance(rule, Conv) and rule.geometry(node) is not None:
        return "conv", rule.adjoint_terms(node)
    if isinstance(rule, Linear):
        if rule.diagonal(node, out_shape) is not None:
            return "diag", 1
        terms = rule.adjoint_terms(node)
        if terms is not None:
            return ("linear" if terms else "move"), terms
    return None, 0


def _grow(h, geometry, j):
    strides, _, dilations, kernel = geometry
    return (h - 1) * strides[j] + dilations[j] * (kernel[j] - 1) + 1


class Pass:
    """The backward passes from one tensor over one bounds table: per-point slopes, constants and error weights of
    every step, computed once; `lower_elements` and `lower_dense` run chunks of rows.

    A linear step whose output a ReLU/Clip step relaxes next (Conv → Relu) is folded into that step: with
    a' = a·slope (slope ls where a > 0, us where a < 0), its constant Σ a'·c and error term ⟨|a'|, E⟩ are
    Σ a·(ls·c - |ls|·E) where a > 0 and Σ a·(us·c + |us|·E) where a < 0, one signed sum with the relaxation's own."""

    def __init__(self, engine, start, table, ball, window: bool, start_terms: int | None = None,
                 track: bool = False, dtype: torch.dtype | None = None):
        """`track` (tests): also sum what the folded terms take off, so `last_error` is the whole rounding term;
        `dtype`: the working precision (default: the engine's `fast` mode and the device's)."""
        self.engine, self.start, self.ball, self.track = engine, start, ball, track
        lo = table[start][0]
        self.device = lo.device
        self.dtype = dtype or (torch.float64 if getattr(engine, "fast", "auto") == "float64"
                               else working_dtype(lo.device))
        self.u, self.tiny = UNIT[self.dtype], TINY[self.dtype]
        self.g = gamma(BLOCK + 2, self.u)
        self.shapes = {name: tuple(t[0].shape[1:]) for name, t in table.items()}
        route = _route(engine, start, self.shapes, window, ball.norm == "inf")
        self.steps = None if route is None else route[0]
        if self.steps is None:
            return
        self.windowed, self.end = route[1], route[2]
        # the start's coefficients have at most start_terms nonzeros per row (1 for ±e_j): the first step's sums too
        raw = [self._prepare(step, table, step.terms if i or start_terms is None else min(step.terms, start_terms))
               for i, step in enumerate(self.steps)]
        self.prep = self._finish(raw)
        lo, hi = (table[self.end] if self.ball.norm == "inf" else ball.box())
        mag = torch.maximum(lo.abs(), hi.abs())
        widen = (self.g * mag / (1 - self.g)).clamp_min(FLOOR)
        self.pos, self.neg = self._cast(lo - widen), self._cast(hi + widen)  # a·x >= Σ a·(pos if a > 0 else neg)
        self.widen = self._cast(widen) if track else None
        self.under_in = self.tiny * 4 * (math.prod(self.shapes[self.end]) + 2)

    @property
    def applies(self) -> bool:
        return self.steps is not None

    def _cast(self, t):
        t = t.to(self.dtype)
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.contiguous()

    def _prepare(self, step, table, terms):
        """float64 parts of one step: the clip's relaxation, a linear step's E (its rounding), constant and factor."""
        node, rule = self.engine.graph.nodes[step.index], self.engine.rules[step.index]
        lo, hi = table[step.src]
        mag = torch.maximum(lo.abs(), hi.abs())
        B = lo.shape[0]
        terms = min(terms, step.entries)  # a sum of one input entry has no more nonzero terms than the window
        out = {"under": self.tiny * (terms + 1) * mag.reshape(B, -1).sum(1)}
        if step.kind == "move":
            return out
        big = self.tiny * (mag[0].numel() + 1) * (mag.reshape(B, -1).max(1).values + 1)  # rounded tiny weights
        if step.kind == "clip":
            low, high = rule.limits(node)
            ls, lb, us, ub = _relaxation(lo, hi, low, high)
            # a' = a·us + relu(a)·(ls - us): |a'| <= |a|·slope, its rounding within γ_5·(|ls| + 2|us|)·|a|
            out.update(ls=ls, us=us, pos=lb, neg=ub, slope=torch.maximum(ls.abs(), us.abs()))
            out["base"] = (gamma(5, self.u) * (ls.abs() + 2 * us.abs()) * mag
                           + big.reshape(B, *([1] * (lo.dim() - 1))))
            out["under"] = out["under"] + self.tiny * step.entries * (torch.maximum(lb.abs(), ub.abs()).reshape(
                B, -1).max(1).values + 2)
            return out
        through = rule.abs_linear(node, mag)
        c = rule.constant(node, lo)
        n = terms + (2 if step.kind == "diag" else 1)  # Div's 1/c: one more rounding
        out["e"] = gamma(n + 1, self.u) * through + big.reshape(B, *([1] * (c.dim() - 1)))
        out["c"] = c.expand(1, *self.shapes[step.dst]) if bool(c.any()) else None
        if step.kind == "conv":
            out.update(w=rule._parts(node)[0].to(self.dtype), geometry=rule.geometry(node))
        elif step.kind == "diag":
            d = rule.diagonal(node, self.shapes[step.dst])
            out["d"] = self._cast(d.expand(1, *self.shapes[step.dst]) if d.dim() else d.reshape(1))
        out["under"] = out["under"] + self.tiny * step.entries * (c.abs().max() + 2)
        return out

    def _finish(self, raw):
        """Fold linear steps into the clip steps before them, then cast what the passes read."""
        for i, step in enumerate(self.steps[:-1]):
            nxt = self.steps[i + 1]
            if step.kind == "clip" and nxt.kind in ("conv", "linear", "diag") and nxt.dst == step.src:
                clip, lin = raw[i], raw[i + 1]
                # the computed a' = fl(a·slope) is within γ_5·(|ls| + 2|us|)·|a| of a·slope: the folded terms use
                # a·slope, so the constant's share of that gap is added, and |a'| <= (1 + 3γ_5)·slope·|a|
                g5 = gamma(5, self.u)
                if lin["c"] is not None:
                    clip["pos"], clip["neg"] = clip["pos"] + clip["ls"] * lin["c"], clip["neg"] + clip["us"] * lin["c"]
                    clip["base"] = clip["base"] + g5 * (clip["ls"].abs() + 2 * clip["us"].abs()) * lin["c"].abs()
                clip["base"] = clip["base"] + (1 + 3 * g5) * clip["slope"] * lin["e"]
                lin["folded"] = True
        out = []
        for step, r in zip(self.steps, raw, strict=True):
            if step.kind == "clip":
                # the signed sum Σ a·(pos where a > 0, neg where a < 0) runs as Σ relu(a)·(pos - neg) + Σ a·neg: E
                # covers this step's rounding, the folded step's, and (γ of a block) both sums' own
                e = (r["base"] + self.g * (r["pos"].abs() + 2 * r["neg"].abs())) / (1 - 3 * self.g)
                e = e.clamp_min(FLOOR).nan_to_num(nan=math.inf)
                r = {"us": self._cast(r["us"]), "dslope": self._cast(r["ls"] - r["us"]),
                     "dcut": self._cast(r["pos"] - r["neg"] - 2 * e), "neg": self._cast(r["neg"] + e),
                     "under": r["under"], "e": self._cast(e) if self.track else None}
            elif step.kind != "move":
                c = r.pop("c")
                if not r.get("folded"):
                    e = r["e"] + (0 if c is None else self.g * c.abs())
                    r["e"] = self._cast(e.clamp_min(FLOOR).nan_to_num(nan=math.inf))
                    r["c"] = None if c is None else self._cast(c)
            out.append(r)
        return out

    def budget_rows(self, budget: int, specs: int) -> int:
        """Rows per chunk: the most coefficient entries a row holds along the route, within `budget` bytes, and one
        coefficient tensor within CHUNK_BYTES (small tensors reuse the allocator's memory and stay near the cache:
        on the benchmark a quarter faster than chunks as large as the budget allows)."""
        widest = max([s.entries for s in self.steps] + [s.entries_in for s in self.steps] + [1])
        item = torch.finfo(self.dtype).bits // 8
        return max(1, min(budget // (specs * widest * item * BYTES_PER_ENTRY), CHUNK_BYTES // (specs * widest * item)))

    # --- chunks of rows -------------------------------------------------------------------------------------------
    def lower_elements(self, points, elements, budget):
        """Yields (rows, bounds [2, len(rows)]): lower bounds of +x_e and -x_e of the start tensor at each row's
        point (CROWN's bounds of element e: lower = first, upper = -second), for every row (points[r], elements[r]),
        points sorted. Windowed routes run the rows of one start position together (one window for all), dense
        routes one point at a time where it has enough rows (its tensors broadcast, nothing gathered)."""
        shape = self.shapes[self.start]
        chunk = self.budget_rows(budget, 2)
        if not self.windowed:
            for rows in _point_chunks(points, chunk):
                p, e, k = points[rows], elements[rows], len(rows)
                a = _empty((2, k, *shape), self.dtype, self.device).zero_()
                idx = torch.arange(k, device=self.device)
                if len(shape) == 3:
                    C, H, W = shape
                    a[0, idx, e // (H * W), (e // W) % H, e % W] = 1.0
                else:
                    a.view(2, k, -1)[0, idx, e] = 1.0
                a[1] = -a[0]
                yield rows, self._run(a, p, None)
            return
        C, H, W = shape
        position = elements % (H * W)
        order = torch.argsort(position, stable=True)  # by position, then point, then channel
        counts = torch.bincount(position, minlength=H * W).tolist()
        first = 0
        for pos, count in enumerate(counts):
            group = order[first:first + count]
            first += count
            if not count:
                continue
            y, x = divmod(pos, W)
            win = (y, y + 1, x, x + 1)
            pts, per = torch.unique_consecutive(points[group], return_counts=True)
            if 2 * count >= len(pts) * C:
                # most channels wanted at these points: run every channel of each point as a block (its tensors
                # broadcast over the block, nothing gathered), keep the wanted ones
                slots = torch.repeat_interleave(torch.arange(len(pts), device=self.device), per) * C
                slots += elements[group] // (H * W)
                span = max(1, chunk // C)
                for start in range(0, len(pts), span):
                    end = min(start + span, len(pts))
                    P = end - start
                    a = torch.zeros((2, P, C, C, 1, 1), dtype=self.dtype, device=self.device)
                    a[0, :, torch.arange(C), torch.arange(C)] = 1.0
                    a[1] = -a[0]
                    bound = self._run(a.reshape(2, P * C, C, 1, 1), pts[start:end], win, group=C)
                    keep = (slots >= start * C) & (slots < end * C)
                    self.last_error = self.last_error[:, slots[keep] - start * C]
                    yield group[keep], bound[:, slots[keep] - start * C]
                continue
            for start in range(0, count, chunk):
                rows = group[start:start + chunk]
                k = len(rows)
                a = torch.zeros((2, k, C, 1, 1), dtype=self.dtype, device=self.device)
                a[0, torch.arange(k), elements[rows] // (H * W)] = 1.0
                a[1] = -a[0]
                yield rows, self._run(a, points[rows], win)

    def lower_dense(self, C, budget):
        """Lower bounds [S, B] of C·start (C: [S, B, *shape], any float dtype; B the table's points)."""
        S, B = C.shape[:2]
        out = torch.empty((S, B), dtype=torch.float64, device=self.device)
        points = torch.arange(B, device=self.device)
        for rows in _point_chunks(points, self.budget_rows(budget, S)):
            a = _empty(C[:, rows].shape, self.dtype, self.device)
            a.copy_(C[:, rows])
            out[:, rows] = self._run(a, points[rows], None)
        return out

    def _run(self, a, p, win, group=1):
        """The backward pass of coefficients a [S, k, ...] (owned: updated in place), on the window
        win = (y0, y1, x0, x1) of the start tensor or dense where None: lower bounds [S, k] in float64. Row r is at
        point p[r] (sorted), or (`group` > 1) rows i·group .. (i + 1)·group - 1 at point p[i] (distinct): per-point
        tensors then broadcast over each point's rows."""
        S, k = a.shape[:2]
        keep = 2 if group == 1 else 3
        if group == 1 and bool(p[0] == p[-1]):
            p = p[:1]  # one point: its tensors broadcast, nothing gathered

        def take(t):
            t = _take(t, p, win)
            return t if group == 1 else t.unsqueeze(1)

        def rows(t):  # [S, k, ...] as [S, points, group, ...] where grouped
            return t if group == 1 else t.reshape(S, -1, group, *t.shape[2:])

        def total(t):  # Σ over each row's entries, [S, k]
            return _blocked(t, keep).reshape(S, k)

        bias = torch.zeros((S, k), dtype=torch.float64, device=self.device)
        err, size, folded = torch.zeros_like(bias), torch.zeros_like(bias), torch.zeros_like(bias)
        under = torch.zeros(k if group == 1 else len(p), dtype=torch.float64, device=self.device)
        for step, pre in zip(self.steps, self.prep, strict=True):
            if win is not None and not step.keeps:
                a, win = _embed(a, win, self.shapes[step.dst]), None
            under = under + pre["under"][p]
            av = rows(a)
            if step.kind == "clip":
                if self.track:
                    folded = folded + total(av.abs() * take(pre["e"]))
                r = av.clamp_min(0)
                t = r * take(pre["dcut"])
                b = total(t) + total(torch.mul(av, take(pre["neg"]), out=t))
                bias, size = bias + b, size + b.abs()
                if _dense_like(a) and av.data_ptr() == a.data_ptr():  # av a view of a: in place
                    av.mul_(take(pre["us"])).addcmul_(r, take(pre["dslope"]))
                else:
                    a = (av * take(pre["us"])).addcmul_(r, take(pre["dslope"])).reshape(S, k, *a.shape[2:])
                continue
            if step.kind != "move" and not pre.get("folded"):
                err = err + total(av.abs() * take(pre["e"])) / (1 - gamma(step.entries + 2, self.u))
                if pre["c"] is not None:
                    b = total(av * take(pre["c"]))
                    bias, size = bias + b, size + b.abs()
            if step.kind == "diag":
                d = pre["d"] if pre["d"].dim() == 1 else take(pre["d"])
                if _dense_like(a) and av.data_ptr() == a.data_ptr():
                    av.mul_(d)
                else:
                    a = (av * d).reshape(S, k, *a.shape[2:])
                continue
            node, rule = self.engine.graph.nodes[step.index], self.engine.rules[step.index]
            in_shape = self.shapes[step.src]
            flat = a.reshape(S * k, *a.shape[2:])
            if flat.dim() == 4:
                flat = flat.contiguous(memory_format=torch.channels_last)
            if win is not None:
                a, win = self._conv_window(node, rule, pre, flat, win, in_shape)
                a = a.reshape(S, k, *a.shape[1:])
            else:
                a = rule.adjoint(node, flat, [in_shape])[0].reshape(S, k, *in_shape)
        if group > 1:
            under = under.repeat_interleave(group)
        if win is not None and self.ball.norm == "2":
            a, win = _embed(a, win, self.shapes[self.end]), None
        if self.ball.norm == "2":  # the ball's own float64 concretisation of these (exactly known) coefficients
            zero = torch.zeros((S, k), dtype=torch.float64, device=self.device)
            points = p.repeat_interleave(group) if group > 1 else (p.expand(k) if len(p) == 1 else p)
            through = self.ball.select(points).lower(a.double(), zero, zero)
        else:  # over the box: a·lo where a > 0, a·hi where a < 0, the sum's rounding inside the widening
            av = rows(a)
            through = total(torch.where(av > 0, take(self.pos), take(self.neg)).mul_(av))
            if self.track:
                folded = folded + total(av.abs() * take(self.widen))
        total_err = err + under.unsqueeze(0) + self.under_in
        taken = total_err + SLACK * (through.abs() + size + total_err)
        self.last_error = taken + folded  # what this pass took off for rounding (folded: only when tracked)
        bound = through + bias - taken
        return torch.where(torch.isnan(bound), -math.inf, bound)

    def _conv_window(self, node, rule, pre, flat, win, in_shape):
        """The transposed convolution of window coefficients, cropped to the input (what falls on padding multiplies
        zeros); a window that covers the whole input becomes dense."""
        strides, pads, dilations, _ = pre["geometry"]
        if flat.shape[2:] == (1, 1) and list(dilations) == [1, 1]:  # Lᵀ of one position: the kernels themselves
            w = pre["w"]
            new = (flat.reshape(flat.shape[0], -1) @ w.reshape(w.shape[0], -1)).reshape(-1, *w.shape[1:])
        else:
            new = rule.adjoint_window(node, flat, pre["w"])
        y0, x0 = win[0] * strides[0] - pads[0], win[2] * strides[1] - pads[1]
        H, W = in_shape[1:]
        cy0, cx0 = max(y0, 0), max(x0, 0)
        cy1, cx1 = min(y0 + new.shape[2], H), min(x0 + new.shape[3], W)
        new = new[:, :, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        return new, (None if (cy0, cy1, cx0, cx1) == (0, H, 0, W) else (cy0, cy1, cx0, cx1))


def _route(engine, start, shapes, window, box):
    key = (start, window, box, tuple(shapes[start]), tuple(shapes[engine.graph.input]))
    cache = engine.__dict__.setdefault("_fast_routes", {})
    if key not in cache:
        cache[key] = plan(engine, start, shapes, window, box)
    return cache[key]


def _point_chunks(points, chunk):
    """Row index chunks of at most `chunk` rows over sorted points: a point with ALONE rows or more alone (its
    tensors then broadcast; grouped, each row would gather its own copy of every per-point tensor), points with
    fewer rows together."""
    counts = torch.unique_consecutive(points, return_counts=True)[1].tolist()
    first, pending = 0, []
    for count in counts:
        if count >= min(chunk // 4, ALONE):
            if pending:
                yield torch.arange(pending[0], first, device=points.device)
                pending = []
            for start in range(first, first + count, chunk):
                yield torch.arange(start, min(start + chunk, first + count), device=points.device)
        else:
            if pending and first + count - pending[0] > chunk:
                yield torch.arange(pending[0], first, device=points.device)
                pending = []
            if not pending:
                pending = [first]
        first += count
    if pending:
        yield torch.arange(pending[0], first, device=points.device)


def _empty(shape, dtype, device):
    """An uninitialised [S, k, *shape] tensor, channels-last where the per-point shape is (C, H, W)."""
    if len(shape) == 5:
        S, k, C, H, W = shape
        return torch.empty((S, k, H, W, C), dtype=dtype, device=device).permute(0, 1, 4, 2, 3)
    return torch.empty(shape, dtype=dtype, device=device)


def _dense_like(a):
    """Whether a is laid out densely (contiguous or channels-last): else a product makes a dense copy."""
    if a.dim() != 5:
        return a.is_contiguous()
    return a.is_contiguous() or a.permute(0, 1, 3, 4, 2).is_contiguous()


def _take(t, p, win):
    """Each row's values [k or 1, ...] of a per-point tensor t [B or 1, ...], on the window if any."""
    if win is not None:
        t = t[..., win[0]:win[1], win[2]:win[3]]
    if t.shape[0] == 1:
        return t
    if len(p) == 1:
        return t[p[0]:p[0] + 1]
    if win is not None:  # gather rows from the (small) windows of all points, not from strided slices
        t = t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.contiguous()
    return t.index_select(0, p)


def _blocked(t, keep=2):
    """The sum of t [*lead, ...] over all but its first `keep` axes, in float64 from float32 partial sums of at most
    BLOCK terms each (so γ_BLOCK bounds their rounding, whatever order the kernel sums in); the terms are taken in
    memory order (any order will do)."""
    if t.dim() == keep + 3 and not t.is_contiguous():
        t = t.permute(*range(keep), keep + 1, keep + 2, keep)  # channels-last: a view in memory order
    flat = t.reshape(*t.shape[:keep], -1)
    n = flat.shape[-1]
    block = next(b for b in range(min(BLOCK, n), 0, -1) if n % b == 0)
    return flat.reshape(*flat.shape[:-1], n // block, block).sum(-1).double().sum(-1)


def _rowdot(a, t):
    """Σ a·t over each row's entries, [S, k] float64 (t: [k or 1, ...], broadcast over specs)."""
    return _blocked(a * t)


def _embed(a, win, shape):
    """Window coefficients a [S, k, C, h, w] at win = (y0, y1, x0, x1) as dense ones [S, k, C, H, W]."""
    dense = _empty((*a.shape[:3], *shape[1:]), a.dtype, a.device).zero_()
    dense[..., win[0]:win[1], win[2]:win[3]] = a
    return dense
