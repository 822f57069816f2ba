"""onnxruntime (CPU) against PyTorch eager (CPU) for the model zoo at batch 1 and 32, as ratios from one run.

Both runtimes are loaded for a model, then timed alternately in rounds (ort, torch, ort, torch, ...) so that
load from other processes on the shared cores hits both alike; the ratio is torch p50 / ort p50 over all
rounds. Target: onnxruntime at least 1.5x faster at batch 1 on the small CNNs (< 50 MFLOP per image).
Run: python -m benchmarks.runtime_compare [--threads 1] [--rounds 5] [--budget 0.3]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import save_result
from edgerobust.bench import BenchModel, TimingPlan, get_runtime, summarize, time_calls
from edgerobust.bench.api import export_for_bench
from edgerobust.bench.modes import tile_images
from edgerobust.models import build_model, count_flops, count_parameters

DIGITS, MNIST, CIFAR = (1, 8, 8), (1, 28, 28), (3, 32, 32)
ZOO = [("mlp", DIGITS), ("snn", DIGITS), ("scnn1", DIGITS), ("scnn2:16-32", DIGITS), ("scnn2-mp", MNIST),
       ("lenet5", MNIST), ("svhn-teacher", CIFAR), ("cifar-teacher", CIFAR), ("vgg-small", CIFAR),
       ("resnet20", CIFAR), ("mobilenetv2", CIFAR), ("vgg11", CIFAR), ("vgg16", CIFAR), ("preactresnet18", CIFAR),
       ("resnet34", CIFAR)]
BATCHES = (1, 32)
SMALL_FLOPS = 50_000_000
TARGET_RATIO = 1.5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per runtime, batch and round")
    parser.add_argument("--models", default="", help="comma-separated subset of the zoo")
    args = parser.parse_args()
    torch.manual_seed(0)
    wanted = [m for m in args.models.split(",") if m]
    zoo = [(spec, shape) for spec, shape in ZOO if not wanted or spec in wanted]
    rows = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for spec, shape in zoo:
            module = build_model(spec, shape, 10).eval()
            onnx = export_for_bench(module, shape, Path(tmp) / f"{spec.replace(':', '_')}.onnx", 17)
            model = BenchModel(spec, module, shape, {"fp32": onnx})
            sessions = {name: get_runtime(name).load(model, "fp32", args.threads, max(BATCHES))
                        for name in ("ort-cpu", "torch-cpu")}
            images = torch.rand((max(BATCHES), *shape), generator=torch.Generator().manual_seed(0)).numpy()
            durations: dict[tuple[str, int], list[float]] = {(n, b): [] for n in sessions for b in BATCHES}
            for batch in BATCHES:
                inputs = {n: s.prepare(tile_images(images, batch)) for n, s in sessions.items()}
                calls = {}
                for name, session in sessions.items():  # calls per slot sized to the time budget
                    probe = time_calls(lambda s=session, x=inputs[name]: s.run(x), TimingPlan(3, 3))
                    calls[name] = max(5, min(200, int(args.budget / max(min(probe), 1e-6))))
                for _ in range(args.rounds):
                    for name, session in sessions.items():
                        durations[(name, batch)] += time_calls(lambda s=session, x=inputs[name]: s.run(x),
                                                               TimingPlan(2, calls[name]))
            for session in sessions.values():
                session.close()
            flops = count_flops(module, shape)
            for batch in BATCHES:
                ort, eager = summarize(durations[("ort-cpu", batch)]), summarize(durations[("torch-cpu", batch)])
                row = {"model": spec, "input_shape": list(shape), "batch": batch,
                       "parameters": count_parameters(module),
                       "flops_per_image": flops, "small_cnn": flops < SMALL_FLOPS,
                       "ort_p50_ms": ort["p50_ms"], "torch_p50_ms": eager["p50_ms"],
                       "ort_p90_ms": ort["p90_ms"], "torch_p90_ms": eager["p90_ms"],
                       "ort_calls": ort["n"], "torch_calls": eager["n"],
                       "ort_speedup_p50": eager["p50_ms"] / ort["p50_ms"]}
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("model", "batch", "ort_p50_ms", "torch_p50_ms",
                                                      "ort_speedup_p50")}), flush=True)
    small = [r for r in rows if r["small_cnn"] and r["batch"] == 1]
    save_result("runtime_compare", {
        "method": (f"ort-cpu (onnxruntime CPU EP, graph optimisations on, sequential) vs torch-cpu (eager, "
                   f"inference_mode), {args.threads} intra-op thread(s) each, fp32, uniform random inputs; the two "
                   f"runtimes alternate in {args.rounds} rounds per model and batch, each slot ~{args.budget}s of "
                   "calls after 2 warm-up calls; ratio = torch p50 / ort p50 over all rounds"),
        "threads": args.threads, "rounds": args.rounds, "target": f"ort >= {TARGET_RATIO}x faster at batch 1 on "
                                                                   f"small CNNs (< {SMALL_FLOPS:,} FLOPs/image)",
        "target_met": all(r["ort_speedup_p50"] >= TARGET_RATIO for r in small),
        "small_cnn_batch1_min_speedup": min((r["ort_speedup_p50"] for r in small), default=None),
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "seconds": round(time.perf_counter() - started, 1), "results": rows})


if __name__ == "__main__":
    main()
