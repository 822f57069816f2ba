"""CROWN's cost on a conv model at ε = 2/255: seconds, peak memory and the ratio to a forward pass of the same
artifact in the engine, with where the time goes (IBP, each ReLU input's intermediate bounds, the final margins),
and how far the fast pass (bounds/fast.py) lies from the float64 pass on the first `--check` points (same tables).

Issue 22's target: 100 inputs of Barmpas's `cifar-teacher` in <= 30 s under 4 GB on 2 cores, bounds equal to standard
CROWN's. Run: `python -m benchmarks.certify_speed [--n N] [--model SPEC] [--device cpu|cuda]`; results go to
results/certify_speed_<model>.json (`scnn2:16-32` on 1x8x8 digits-sized inputs, the default pipeline's model, or
`cifar-teacher` on 3x32x32). The model has random weights (seed 0): the cost depends on how many ReLU inputs are
unstable (CROWN pays per point for its own unstable neurons), so a trained, robust model is cheaper.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from benchmarks.common import environment, save_result
from edgerobust.bounds import Ball, Engine, from_onnx
from edgerobust.bounds import engine as engine_module
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.models.registry import build_model


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--model", default="cifar-teacher")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget-mb", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target: 2 cores)")
    parser.add_argument("--check", type=int, default=1,
                        help="points also bounded by the float64 pass, to compare (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (3, 32, 32) if args.model.startswith(("cifar", "svhn")) else (1, 8, 8)
    model = build_model(args.model, shape, 10, mean=[0.5] * shape[0], std=[0.25] * shape[0]).eval()
    engine = Engine(from_onnx(simplify(to_onnx(model, shape, 13))))
    for name, t in engine.graph.consts.items():
        engine.graph.consts[name] = t.to(args.device)
    x = torch.rand((args.n, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(args.device)
    labels = engine.output(x).argmax(1)
    ball = Ball(x, 2 / 255)
    rss0 = peak_rss_mb()
    per_tensor = {}
    plain = Engine._tensor_bounds

    def timed(self, name, *rest):  # where the time goes: one backward pass family per ReLU input
        start = time.perf_counter()
        out = plain(self, name, *rest)
        per_tensor[name] = time.perf_counter() - start
        return out

    load_before, cpu0 = os.getloadavg(), time.process_time()
    engine_module.Engine._tensor_bounds = timed
    with torch.no_grad():
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        timings = {}
        for name, fn in (("forward", lambda: engine.output(x)), ("ibp", lambda: engine.bounds(ball, "ibp")),
                         ("crown_intermediate", lambda: engine.bounds(ball, "crown", args.budget_mb << 20))):
            sync()
            start = time.perf_counter()
            out = fn()
            sync()
            timings[name] = time.perf_counter() - start
            if name == "crown_intermediate":
                table = out
        sync()
        start = time.perf_counter()
        margins, _ = engine.margins(ball, labels, "crown", args.budget_mb << 20, table=table)
        sync()
        timings["crown_margins"] = time.perf_counter() - start
    engine_module.Engine._tensor_bounds = plain
    cpu_seconds, load_after = time.process_time() - cpu0, os.getloadavg()
    crown = timings["crown_intermediate"] + timings["crown_margins"]
    check = compare_with_float64(engine, ball, labels, args.check, args.budget_mb << 20) if args.check else None
    unstable = {}
    for node in engine.graph.nodes:
        if node.op == "Relu":
            for source, key in ((engine.bounds(ball, "ibp"), "ibp"), (table, "crown")):
                lo, hi = source[node.dynamic[0]]
                unstable.setdefault(node.dynamic[0], {})[key] = float(((lo < 0) & (hi > 0)).sum() / args.n)
    result = {"model": args.model, "weights": "random (seed 0)", "n": args.n, "eps": 2 / 255, "device": args.device,
              "threads": args.threads, "seconds": timings, "intermediate_seconds_per_relu_input": per_tensor,
              "cpu_seconds_all_phases": cpu_seconds, "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in load_after], "crown_seconds": crown,
              "crown_over_forward": crown / timings["forward"],
              "ibp_over_forward": timings["ibp"] / timings["forward"], "peak_rss_mb": peak_rss_mb(),
              "peak_rss_before_mb": rss0, "certified": int((margins.min(1).values > 0).sum()),
              "unstable_relu_inputs_per_point": unstable, "target": "100 inputs <= 30 s under 4 GB (issue 22)",
              "seconds_per_100_inputs": crown * 100 / args.n, "ratio_to_target_30s": crown * 100 / args.n / 30,
              "fast_vs_float64": check, "environment": environment()}
    if args.device.startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print({k: v for k, v in result.items() if k != "environment"})
    print(f"CROWN: {crown:.1f} s for {args.n} inputs = {crown * 100 / args.n / 30:.2f}x the target's 30 s per 100, "
          f"peak RSS {peak_rss_mb():.0f} MB (target < 4096)")
    save_result(f"certify_speed_{args.model.split(':')[0]}", result)


def compare_with_float64(engine, ball, labels, n, budget):
    """Bounds of the first n points by the fast pass (no gradient) and by the float64 pass (gradients enabled, as
    certified training runs it): the largest gaps of intermediate bounds and of margins, and the margins' scale."""
    small = ball.select(torch.arange(n))
    start = time.perf_counter()
    with torch.no_grad():
        fast = engine.bounds(small, "crown")
        fast_margins, _ = engine.margins(small, labels[:n], "crown", budget, table=fast)
    fast_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.enable_grad():
        slow = engine.bounds(small, "crown")
        slow_margins, _ = engine.margins(small, labels[:n], "crown", budget, table=slow)
    slow_seconds = time.perf_counter() - start
    finite = torch.isfinite(slow_margins)
    gaps = {name: float(torch.maximum((fast[name][0] - slow[name][0]).abs(), (fast[name][1] - slow[name][1]).abs()
                                      ).max()) for name in slow}
    return {"points": n, "fast_seconds": fast_seconds, "float64_seconds": slow_seconds,
            "largest_intermediate_gap": max(gaps.values()),
            "largest_margin_gap": float((fast_margins - slow_margins)[finite].abs().max()),
            "margin_scale": float(slow_margins[finite].abs().max())}


if __name__ == "__main__":
    main()
