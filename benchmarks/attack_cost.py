"""An attack costs its forward/backward passes and nothing more.

1. PGD-k time per batch against k bare forward+backward passes (input gradient) of the same model, interleaved
   and repeated; ratio = PGD / passes (target ≤ 1.10). Early exit is off so both do the same number of passes.
2. The standard suite's cost as points break: seconds and points attacked per attack across ε.

Run: python -m benchmarks.attack_cost  (writes benchmarks/results/attack_cost.json)
"""
from __future__ import annotations

import statistics
import time

import torch

from benchmarks.common import digits_model, save_result
from edgerobust.attacks import get_attack, loss_gradient
from edgerobust.data import load_dataset
from edgerobust.evaluation import standard_suite
from edgerobust.models import build_model

REPEATS = 9
STEPS = 10


def passes(model, x, y, k):
    for _ in range(k):
        loss_gradient(model, x, y)


def pgd_overhead(name, model, x, y):
    attack = get_attack("pgd", eps=0.1, steps=STEPS, early_exit=False)
    attack(model, x, y)  # warm-up
    passes(model, x, y, 2)
    pgd_times, pass_times = [], []
    for _ in range(REPEATS):  # interleaved so load from other processes hits both alike
        start = time.process_time()
        attack(model, x, y)
        pgd_times.append(time.process_time() - start)
        start = time.process_time()
        passes(model, x, y, STEPS)
        pass_times.append(time.process_time() - start)
    return {"model": name, "batch": list(x.shape), "steps": STEPS, "repeats": REPEATS,
            "pgd_cpu_seconds_min": min(pgd_times), "passes_cpu_seconds_min": min(pass_times),
            "ratio_min": min(pgd_times) / min(pass_times),
            "ratio_median": statistics.median(pgd_times) / statistics.median(pass_times),
            "pgd_cpu_seconds": pgd_times, "passes_cpu_seconds": pass_times}


def main() -> None:
    torch.set_num_threads(1)  # CPU time of one thread: the machine is shared, so wall-clock is mostly other load
    torch.manual_seed(0)
    digits = load_dataset("digits", "test")
    small = digits_model()
    resnet = build_model("resnet20", (3, 32, 32), 10).eval()
    x_c, y_c = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    overhead = [pgd_overhead("scnn2:16-32 (digits 8x8)", small, digits.images, digits.labels),
                pgd_overhead("resnet20 (3x32x32)", resnet, x_c, y_c)]
    suite = []
    for eps in (0.05, 0.1, 0.2, 0.3):
        result = standard_suite(small, digits.images, digits.labels, eps, steps=100, square_queries=1000,
                                progress=False)
        suite.append({"eps": eps, "cumulative": result.cumulative,
                      "attacked": {a["attack"]: a["attacked"] for a in result.attacks},
                      "seconds": {a["attack"]: a["seconds"] for a in result.attacks},
                      "total_seconds": sum(a["seconds"] for a in result.attacks)})  # wall-clock, shared machine
    for row in overhead:
        print(f"{row['model']}: PGD-{STEPS} {row['pgd_cpu_seconds_min'] * 1e3:.1f} ms vs {STEPS} passes "
              f"{row['passes_cpu_seconds_min'] * 1e3:.1f} ms CPU, ratio {row['ratio_min']:.3f} (min), "
              f"{row['ratio_median']:.3f} (median)")
    for row in suite:
        print(f"suite ε={row['eps']}: {row['total_seconds']:.2f} s, attacked {row['attacked']}")
    save_result("attack_cost", {
        "how": f"process CPU time, 1 torch thread, min and median of {REPEATS} interleaved repeats; "
               "PGD with random start, no early exit; reference = "
               f"{STEPS} × loss_gradient (one forward + input backward each); suite: APGD-CE(100) → APGD-T(100, 9 "
               "targets) → Square(1000 queries) on 450 digits test images, one run per ε",
        "target": "PGD-k time per batch within 10% of k forward+backward passes; suite cost falls as ε breaks points",
        "pgd_overhead": overhead, "suite_cost": suite})


if __name__ == "__main__":
    main()
