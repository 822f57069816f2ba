"""Training memory of KAF networks against the same network with ReLU (Peconi; the issue asks ≤ 2×).

What backward keeps is what a training step's peak memory grows with: every tensor autograd saves is counted
(bytes, by `torch.autograd.graph.saved_tensors_hooks`, storage counted once) for one forward of a batch, for the ReLU
network, the KAF network with the recomputing autograd function (models/kaf.py) and the textbook KAF whose
N×C×H×W×D intermediate autograd keeps. Deterministic: byte counts, not a sampled RSS.
Run: python -m benchmarks.kaf_memory
"""
from __future__ import annotations

import torch
from torch import nn

from benchmarks.common import save_result
from edgerobust.models import build_model
from edgerobust.models.kaf import KAF, kaf_naive


class NaiveKAF(nn.Module):
    def __init__(self, kaf: KAF):
        super().__init__()
        self.kaf = kaf

    def forward(self, x):
        return kaf_naive(x, self.kaf.alpha, self.kaf.dictionary, self.kaf.gamma)


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


def naive_copy(model: nn.Module) -> nn.Module:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, KAF):
                setattr(parent, name, NaiveKAF(child))
    return model


def main() -> None:
    rows = []
    for spec, shape in (("scnn2:16-32", (1, 8, 8)), ("resnet20", (3, 32, 32)), ("vgg-small:32-64", (3, 32, 32))):
        torch.manual_seed(0)
        x = torch.rand(64, *shape)
        relu = build_model(spec, shape, 10)
        kaf = build_model(spec, shape, 10, activation="kaf")
        naive = naive_copy(build_model(spec, shape, 10, activation="kaf"))
        r, k, n = saved_bytes(relu, x), saved_bytes(kaf, x), saved_bytes(naive, x)
        rows.append({"model": spec, "input": list(shape), "batch": 64, "relu_bytes": r, "kaf_bytes": k,
                     "naive_kaf_bytes": n, "kaf_over_relu": k / r, "naive_over_relu": n / r})
        print(f"{spec:16s} ReLU {r / 2**20:8.2f} MiB  KAF {r and k / 2**20:8.2f} MiB ({k / r:.2f}x)  "
              f"textbook KAF {n / 2**20:8.2f} MiB ({n / r:.2f}x)")
    result = {"what": "bytes autograd saves for backward in one training forward (batch 64)", "rows": rows,
              "target": "kaf_over_relu <= 2", "met": all(row["kaf_over_relu"] <= 2 for row in rows)}
    print("saved", save_result("kaf_memory", result))


if __name__ == "__main__":
    main()
