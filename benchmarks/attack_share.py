"""How much of an attack's time is spent inside the model's forward and backward passes (issue 9 §4).

For each attack of the standard suite (APGD-CE, APGD-T, FAB-T, Square) and PGD, on the digits model (scnn2:16-32,
8x8, the small edge case) and on ResNet-20 (3x32x32, model-bound):
1. run the attack once through a recorder that logs every model call: its batch size and how many backward passes
   went through its output;
2. time the attack on the bare model and, interleaved with it, a replay of exactly those passes (same batch sizes,
   a forward then that many input-gradient backward passes) on the same model;
3. share = replay time / attack time: the fraction of the attack's time that its model passes need (target ≥ 0.75
   on the digits model). The rest is the attack's own bookkeeping.

Run: python -m benchmarks.attack_share  (writes benchmarks/results/attack_share.json)
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import digits_model, save_result
from edgerobust.attacks import get_attack
from edgerobust.data import load_dataset
from edgerobust.models import build_model

REPEATS = 3
TARGET = 0.75


class PassRecorder(nn.Module):
    """The model, logging [batch, backward passes] per call (a hook on the logits counts the backwards)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x):
        logits = self.model(x)
        record = [len(x), 0, torch.is_inference_mode_enabled()]
        self.calls.append(record)
        if logits.requires_grad:
            logits.register_hook(lambda grad: record.__setitem__(1, record[1] + 1))
        return logits


def replay(model: nn.Module, calls: list[list[int]], shape: tuple[int, ...]) -> None:
    """The passes an attack made, with nothing else: a forward per call (in inference mode where the attack's was),
    then its input-gradient backwards."""
    for batch, backwards, inference in calls:
        x = torch.rand(batch, *shape)
        if backwards == 0:
            with torch.inference_mode() if inference else torch.no_grad():
                model(x)
            continue
        x.requires_grad_(True)
        logits = model(x)
        loss = F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum")
        for k in range(backwards):
            torch.autograd.grad(loss, x, retain_graph=k < backwards - 1)


def measure(model_name, model, x, y, attack):
    recorder = PassRecorder(model)
    attack(recorder, x, y)
    calls, shape = recorder.calls, tuple(x.shape[1:])
    attack(model, x, y)  # warm-up
    replay(model, calls, shape)
    attack_times, replay_times = [], []
    for _ in range(REPEATS):  # interleaved so load from other processes hits both alike
        start = time.process_time()
        attack(model, x, y)
        attack_times.append(time.process_time() - start)
        start = time.process_time()
        replay(model, calls, shape)
        replay_times.append(time.process_time() - start)
    share_min = min(replay_times) / min(attack_times)
    share_median = statistics.median(replay_times) / statistics.median(attack_times)
    row = {"model": model_name, "attack": attack.name, "settings": attack.describe(), "points": len(x),
           "forwards": len(calls), "backwards": sum(b for _, b, _ in calls),
           "points_through_model": sum(b for b, _, _ in calls), "attack_cpu_seconds_min": min(attack_times),
           "passes_cpu_seconds_min": min(replay_times), "share_min": share_min, "share_median": share_median,
           "attack_cpu_seconds": attack_times, "passes_cpu_seconds": replay_times}
    print(f"{model_name:>22} {attack.name:>8}: attack {min(attack_times) * 1e3:8.1f} ms, its passes "
          f"{min(replay_times) * 1e3:8.1f} ms, share {share_min:.3f} (min) {share_median:.3f} (median), "
          f"{len(calls)} forwards")
    return row


def suite(eps: float, steps: int, targets: int, queries: int, seed: int = 0):
    return [get_attack("pgd", eps=eps, steps=steps, seed=seed),
            get_attack("apgd-ce", eps=eps, steps=steps, seed=seed),
            get_attack("apgd-t", eps=eps, steps=steps, n_target_classes=targets, seed=seed),
            get_attack("fab-t", eps=eps, steps=steps, n_target_classes=targets, seed=seed),
            get_attack("square", eps=eps, queries=queries, seed=seed)]


def main() -> None:
    torch.set_num_threads(1)  # CPU time of one thread: the machine is shared, so wall-clock is mostly other load
    torch.manual_seed(0)
    digits = load_dataset("digits", "test")
    small = digits_model().eval()
    with torch.no_grad():
        correct = small(digits.images).argmax(1) == digits.labels
    x_d, y_d = digits.images[correct][:256], digits.labels[correct][:256]  # one batch of the suite (batch_size 256)
    resnet = build_model("resnet20", (3, 32, 32), 10).eval()
    with torch.no_grad():  # untrained, so its logits nearly tie: make class 0 win by far, so no point breaks (and no
        [m for m in resnet.modules() if isinstance(m, nn.Linear)][-1].bias[0] += 100.0  # float noise flips one)
    x_r = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y_r = torch.zeros(32, dtype=torch.long)
    rows = [measure("scnn2:16-32 (digits)", small, x_d, y_d, a) for a in suite(0.1, 100, 9, 1000)]
    rows += [measure("resnet20 (3x32x32)", resnet, x_r, y_r, a) for a in suite(2 / 255, 5, 3, 50)]
    digits_rows = [r for r in rows if r["model"].startswith("scnn2")]
    save_result("attack_share", {
        "how": f"process CPU time, 1 torch thread, min and median of {REPEATS} interleaved repeats; share = time of "
               "a replay of exactly the attack's model passes (recorded batch sizes; forward, then as many "
               "input-gradient backwards as the attack made through that output) / time of the attack; digits: "
               "the first 256 correctly classified test points (one suite batch), ε = 0.1, 100 steps, 9 targets, "
               "1000 queries; resnet20 (untrained, the last bias of class 0 raised by 100, so every point is class 0 "
               "by far and no attack breaks one: each makes all its passes): 32 random images, ε = 2/255, 5 steps, "
               "3 targets, 50 queries",
        "target": f"share ≥ {TARGET} for every attack of the suite on the digits model",
        "meets_target": all(r["share_min"] >= TARGET for r in digits_rows if r["attack"] != "pgd"),
        "rows": rows})


if __name__ == "__main__":
    main()
