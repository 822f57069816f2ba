"""GPU check: epoch time CPU vs CUDA, attack throughput, fp16 parity; writes benchmarks/results/gpu_check.json.

Needs a CUDA GPU (refuses, writing nothing, without one). Every figure comes from the library's own code paths
with `device=` set (Trainer, attacks, export_run), so it measures what users run. Timing on CUDA synchronises
before reading the clock. The result records the git commit it measured.
Run: python -m benchmarks.gpu_check [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import save_result
from edgerobust.attacks import get_attack
from edgerobust.compute_device import describe_device, resolve_device
from edgerobust.config import ExportConfig
from edgerobust.data import load_dataset
from edgerobust.models import build_model
from edgerobust.training import TrainConfig, Trainer, build_training_loss
from edgerobust.training.api import TrainSetup
from edgerobust.training.loop import LoopSetup

EPOCH_CONFIGS = [  # (label, model, dataset, options, loss)
    ("scnn2:16-32 digits, natural", "scnn2:16-32", "digits", {}, None),
    ("scnn2:16-32 digits, PGD-AT (10 steps)", "scnn2:16-32", "digits", {}, "pgd-at"),
    ("resnet20 synthetic 3×32×32, natural", "resnet20", "synthetic", {"shape": (3, 32, 32), "size": 1024}, None),
    ("resnet20 synthetic 3×32×32, PGD-AT (10 steps)", "resnet20", "synthetic", {"shape": (3, 32, 32), "size": 512},
     "pgd-at"),
]
ATTACKS = [("pgd", {"eps": 8 / 255, "steps": 10, "early_exit": False}), ("apgd-ce", {"eps": 8 / 255, "steps": 10}),
           ("square", {"eps": 8 / 255, "queries": 100})]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(spec, data, loss_name, device, repeats) -> float:
    """Median wall time of one training epoch (the loop's own timing, after a warm-up epoch)."""
    times = []
    for _ in range(repeats):
        torch.manual_seed(0)
        model = build_model(spec, data.input_shape, data.num_classes, data.mean, data.std)
        loss = build_training_loss(loss_name, eps=8 / 255, steps=10) if loss_name else None
        trainer = Trainer(model, data, TrainConfig(epochs=2, batch_size=128, augment=False), LoopSetup(loss=loss),
                          progress=False, device=device)
        history = trainer.fit().history
        sync(device)
        times.append(history[-1]["seconds"])  # the second epoch: kernels chosen, memory allocated
    return statistics.median(times)


def attack_rate(name, settings, device, repeats) -> float:
    data = load_dataset("synthetic", "test", shape=(3, 32, 32), size=256)
    torch.manual_seed(0)
    model = build_model("resnet20", data.input_shape, data.num_classes, data.mean, data.std).eval().to(device)
    x, y = data.images.to(device), data.labels.to(device)
    attack = get_attack(name, **settings)
    attack(model, x[:16], y[:16])  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        attack(model, x, y)
        sync(device)
        times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def fp16_parity() -> dict:
    """export_run's fp32 / fp16 parity (reference on the GPU, full float32) and torch-cuda fp16 against fp32."""
    from edgerobust.export.api import export_run
    from edgerobust.training.api import train_model

    with tempfile.TemporaryDirectory() as tmp:
        run = train_model(Path(tmp) / "run", "scnn2:16-32", "digits", TrainConfig(epochs=5, batch_size=64),
                          TrainSetup(device="cuda"), progress=False)
        exported = export_run(run, ExportConfig(target="h200", fp16=True, int8=False, calibration=0), device="cuda",
                              progress=False)
        model = run.load_model().cuda().eval()
        x = load_dataset("digits", "test").images.cuda()
        with torch.no_grad():
            full, half = model(x), model.half()(x.half()).float()
        return {"export": exported.summary["parity"],
                "torch_cuda_fp16_vs_fp32": {"max_abs_diff": float((full - half).abs().max()),
                                            "max_rel_diff": float((full - half).abs().max() / full.abs().max()),
                                            "top1_agreement": float((full.argmax(1) == half.argmax(1))
                                                                    .float().mean()), "images": len(x)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA GPU (torch.cuda.is_available() is False); nothing written")
    cpu, cuda = torch.device("cpu"), resolve_device("cuda")
    epochs = []
    for label, spec, name, options, loss in EPOCH_CONFIGS:
        data = load_dataset(name, "train", **options)
        seconds = {d.type: epoch_seconds(spec, data, loss, d, args.repeats) for d in (cpu, cuda)}
        epochs.append({"config": label, "images": len(data), "cpu_seconds": seconds["cpu"],
                       "cuda_seconds": seconds["cuda"], "speedup": seconds["cpu"] / seconds["cuda"]})
        print(epochs[-1])
    attacks = []
    for name, settings in ATTACKS:
        rates = {d.type: attack_rate(name, settings, d, args.repeats) for d in (cpu, cuda)}
        attacks.append({"attack": name, **settings, "model": "resnet20 3×32×32", "batch": 256,
                        "cpu_images_per_second": rates["cpu"], "cuda_images_per_second": rates["cuda"],
                        "speedup": rates["cuda"] / rates["cpu"]})
        print(attacks[-1])
    save_result("gpu_check", {"device": describe_device(cuda),
                              "cpu_threads": torch.get_num_threads(), "repeats": args.repeats,
                              "epoch_time": epochs, "attack_throughput": attacks, "fp16_parity": fp16_parity()})


if __name__ == "__main__":
    main()
