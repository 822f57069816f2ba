"""Training throughput (images/s) and peak memory for zoo models on digits and synthetic 3x32x32.

Each configuration trains a few short epochs through the real training loop; the models are interleaved
over repeats so machine noise spreads evenly, and the median epoch rate is reported.
Peak memory is the peak RSS (VmHWM) of a fresh subprocess per model that trains one epoch.
Run: python -m benchmarks.training_throughput [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from benchmarks.common import save_result
from edgerobust.data import load_dataset
from edgerobust.models import build_model, count_flops, count_parameters
from edgerobust.training import TrainConfig, Trainer

CONFIGS = [
    ("scnn2:16-32", "digits", {}),
    ("lenet5", "digits", {}),
    ("resnet20", "digits", {}),
    ("scnn2:16-32", "synthetic", {"shape": (3, 32, 32), "size": 512}),
    ("resnet20", "synthetic", {"shape": (3, 32, 32), "size": 256}),
    ("mobilenetv2", "synthetic", {"shape": (3, 32, 32), "size": 128}),
]


def one_epoch_rate(spec: str, data: str, options: dict, batch_size: int = 64) -> float:
    train = load_dataset(data, "train", **options)
    model = build_model(spec, train.input_shape, train.num_classes, train.mean, train.std)
    trainer = Trainer(model, train, TrainConfig(epochs=1, batch_size=batch_size, augment=False), progress=False)
    result = trainer.fit()
    return result.final["images_per_second"]


def peak_rss_mb(spec: str, data: str, options: dict) -> float:
    """Peak RSS of a fresh process that trains one epoch (so earlier models do not inflate it)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec
    code = ("from benchmarks.training_throughput import one_epoch_rate; "
            f"one_epoch_rate({spec!r}, {data!r}, {options!r}); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rates: dict[str, list[float]] = {f"{s}@{d}": [] for s, d, _ in CONFIGS}
    for _ in range(args.repeats):
        for spec, data, options in CONFIGS:
            rates[f"{spec}@{data}"].append(one_epoch_rate(spec, data, options))
    rows = []
    for spec, data, options in CONFIGS:
        key = f"{spec}@{data}"
        shape = load_dataset(data, "test", **options).input_shape
        model = build_model(spec, shape, 10)
        row = {"model": spec, "data": data, "input_shape": list(shape), "parameters": count_parameters(model),
               "flops_per_image": count_flops(model, shape), "images_per_second_median": statistics.median(rates[key]),
               "images_per_second_all": rates[key], "peak_rss_mb": peak_rss_mb(spec, data, options)}
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("model", "data", "images_per_second_median", "peak_rss_mb")}))
    save_result("training_throughput", {
        "method": "one training epoch (SGD, batch 64, natural loss, no augmentation) through edgerobust's Trainer; "
                  f"median over {args.repeats} interleaved repeats; "
                  "peak RSS (VmHWM) of a fresh process training one epoch",
        "results": rows})


if __name__ == "__main__":
    main()
