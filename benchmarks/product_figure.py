"""The product's own figure: a robust ResNet-20, filter-pruned and int8, against the dense fp32 onnxruntime model.

Speed (CIFAR shape 3×32×32, batch 32, 2 threads, onnxruntime CPU with the runner's settings), side by side in one
run, one call of each graph in turn: dense fp32, dense int8, pruned fp32, pruned int8 (post-training QDQ) and pruned
int8 as a QAT run exports it (QDQ around Conv/Gemm only, the run's scales); the factors: pruning (dense fp32 /
pruned fp32), int8 (pruned fp32 / pruned int8), runtime (torch eager fp32 / onnxruntime fp32, dense). The pruned
network is L1 filter pruning at `--keep` per layer, removed physically (torch-pruning), as `compress --method l1`.

Robustness (no CIFAR files here: the digits-shaped variant, resnet20 on 1×8×8): `train --adv pgd`, then
`compress --method l1 --scheme filter --keep K --adv pgd --qat` (robust QAT in the masked retraining), exported for
x86-cpu with int8; PGD-20 accuracy of the dense fp32 model (torch) against the pruned int8 artifact (PGD-20 through
its differentiable surrogate, evaluation/surrogate.py, the points judged on onnxruntime's own int8 outputs).

Several `--keep` values run side by side (each its own pruned network, timed against the same dense one): where
the layers get thin, onnxruntime's QLinearConv (MLAS u8s8 GEMM over K = 9·C) loses to fp32 Conv, so the int8 factor
falls below 1 and pruning alone carries the total; the sweep shows where that happens. Robustness runs at the first.

    python -m benchmarks.product_figure [--keep 0.5,0.25] [--rounds 5] [--skip-robustness]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from benchmarks.common import save_result
from benchmarks.int8_speedup import session
from edgerobust.bench import TimingPlan, summarize, time_calls
from edgerobust.bench.api import export_for_bench
from edgerobust.compress.l1_filter import l1_filter_masks
from edgerobust.compress.masks import apply_masks
from edgerobust.compress.physical import remove_and_check
from edgerobust.export.quantize import Int8Settings, quantize_int8
from edgerobust.models import build_model, count_flops, count_parameters
from edgerobust.training.qat import QuantizationAware

CIFAR = (3, 32, 32)
BATCH, THREADS = 32, 2
TARGET, MAX_PGD_DROP = 8.0, 0.02


def pruned_resnet20(keep: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    dense = build_model("resnet20", CIFAR, 10).eval()
    with torch.no_grad():  # filters of distinct L1 norms, as a trained network has (random init: near-equal norms)
        for module in dense.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(torch.rand(module.weight.shape[0], 1, 1, 1) + 0.05)
    _, masks = l1_filter_masks(dense, CIFAR, keep)
    masked = apply_masks(_copy(dense), masks).eval()
    slim, _, _, _ = remove_and_check(masked, CIFAR, torch.rand(8, *CIFAR), 1e-4)
    return dense, slim.eval()


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def qat_record(model: torch.nn.Module, images: torch.Tensor) -> dict:
    """The scales a QAT run would record, observed on `images` (speed depends on the graph, not on the values)."""
    qat = QuantizationAware(_copy(model).train(), images[:2])
    with torch.no_grad():
        for i in range(0, len(images), 32):
            qat.model(images[i:i + 32])
    qat.freeze()
    return {"points": qat.record()}


def speed(keep: float, rounds: int, budget: float) -> dict:
    dense, slim = pruned_resnet20(keep)
    generator = torch.Generator().manual_seed(0)
    calibration = torch.rand((64, *CIFAR), generator=generator)
    x = np.ascontiguousarray(calibration[:BATCH].numpy())
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, model in (("dense", dense), ("pruned", slim)):
            fp32 = export_for_bench(model, CIFAR, Path(tmp) / f"{name}.fp32.onnx", 17)
            proto = onnx.load(str(fp32))
            paths[f"{name}-fp32"] = fp32
            paths[f"{name}-int8"] = Path(tmp) / f"{name}.int8.onnx"
            onnx.save(quantize_int8(proto, calibration.numpy(), CIFAR, Int8Settings()), str(paths[f"{name}-int8"]))
        paths["pruned-int8-qat"] = Path(tmp) / "pruned.qat.onnx"
        onnx.save(quantize_int8(onnx.load(str(paths["pruned-fp32"])), calibration.numpy(), CIFAR,
                                Int8Settings(qat=qat_record(slim, calibration))), str(paths["pruned-int8-qat"]))
        sessions = {n: session(p, THREADS) for n, p in paths.items()}
        feeds = {"input": x}
        torch.set_num_threads(THREADS)
        xt = torch.from_numpy(x)
        calls = {**{n: (lambda s=s: s.run(None, feeds)) for n, s in sessions.items()},
                 "dense-torch-fp32": lambda: dense(xt)}
        first = time_calls(calls["dense-fp32"], TimingPlan(1, 2))
        n = max(3, min(100, int(budget / max(min(first), 1e-6))))
        durations: dict[str, list[float]] = {k: [] for k in calls}
        with torch.no_grad():
            for _ in range(rounds * n):  # one call of each in turn: paired under one load
                for k, call in calls.items():
                    durations[k] += time_calls(call, TimingPlan(0, 1))
        stats = {k: summarize(d) for k, d in durations.items()}
    p50 = {k: s["p50_ms"] for k, s in stats.items()}
    low = {k: s["min_ms"] for k, s in stats.items()}
    return {"keep": keep, "batch": BATCH, "threads": THREADS, "p50_ms": p50,
            "min_ms": {k: s["min_ms"] for k, s in stats.items()}, "calls": {k: s["n"] for k, s in stats.items()},
            "params": {"dense": count_parameters(dense), "pruned": count_parameters(slim)},
            "flops": {"dense": count_flops(dense, CIFAR), "pruned": count_flops(slim, CIFAR)},
            "factors": {"pruning": p50["dense-fp32"] / p50["pruned-fp32"],
                        "int8": p50["pruned-fp32"] / p50["pruned-int8"],
                        "int8_qat_graph": p50["pruned-fp32"] / p50["pruned-int8-qat"],
                        "runtime": p50["dense-torch-fp32"] / p50["dense-fp32"],
                        "total": p50["dense-fp32"] / p50["pruned-int8"],
                        "total_qat_graph": p50["dense-fp32"] / p50["pruned-int8-qat"]},
            "factors_fastest_call": {"pruning": low["dense-fp32"] / low["pruned-fp32"],
                                     "int8": low["pruned-fp32"] / low["pruned-int8"],
                                     "total": low["dense-fp32"] / low["pruned-int8"],
                                     "total_qat_graph": low["dense-fp32"] / low["pruned-int8-qat"]}}


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "edgerobust", *args, "-q"], check=True)


def robustness(keep: float, epochs: int, eps: float) -> dict:
    from edgerobust.attacks.pgd import PGD
    from edgerobust.data import load_dataset
    from edgerobust.evaluation.surrogate import ArtifactSurrogate
    from edgerobust.run import RunDir

    test = load_dataset("digits", "test")
    x, y = test.images, test.labels
    with tempfile.TemporaryDirectory() as tmp:
        dense_dir, comp_dir = Path(tmp) / "dense", Path(tmp) / "pruned"
        cli("train", "--model", "resnet20", "--data", "digits", "--epochs", str(epochs), "--adv", "pgd", "--eps",
            str(eps), "--adv-steps", "3", "--no-augment", "--out", str(dense_dir))
        cli("compress", "--model", str(dense_dir), "--method", "l1", "--scheme", "filter", "--keep", str(keep),
            "--retrain-epochs", str(epochs), "--adv", "pgd", "--eps", str(eps), "--steps", "3", "--qat",
            "--no-evaluate", "--out", str(comp_dir))
        cli("export", str(comp_dir), "-t", "x86-cpu", "--int8", "--force-int8")
        dense = RunDir.open(dense_dir).load_model().eval()
        artifact = comp_dir / "export-x86-cpu" / "model.int8.onnx"
        int8 = ort.InferenceSession(str(artifact))
        attack = PGD(eps, steps=20)
        dense_adv = attack.perturb(dense, x, y)
        with torch.no_grad():
            dense_clean = float((dense(x).argmax(1) == y).float().mean())
            dense_pgd = float((dense(dense_adv).argmax(1) == y).float().mean())
        surrogate = ArtifactSurrogate(artifact)
        int8_adv = attack.perturb(surrogate, x, y)
        judge = lambda images: int8.run(None, {"input": images.numpy()})[0].argmax(1)  # noqa: E731
        int8_clean = float((judge(x) == y.numpy()).mean())
        int8_pgd = float((judge(int8_adv) == y.numpy()).mean())
        comp = RunDir.open(comp_dir).manifest
    return {"data": "digits (1×8×8), resnet20", "eps": eps, "train_epochs": epochs, "keep": keep,
            "dense_fp32": {"clean": dense_clean, "pgd20": dense_pgd},
            "pruned_int8_qat": {"clean": int8_clean, "pgd20": int8_pgd, "attack": "PGD-20 through the artifact's "
                                "surrogate, judged on onnxruntime"},
            "pgd_drop_points": 100 * (dense_pgd - int8_pgd),
            "pruned_params": comp["metrics"]["parameters"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", default="0.5,0.35,0.25", help="comma-separated fractions of filters kept")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.15)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--skip-robustness", action="store_true")
    parser.add_argument("--name", default="product_figure", help="results/NAME.json")
    args = parser.parse_args()
    load_before, started = os.getloadavg(), time.perf_counter()
    keeps = [float(k) for k in args.keep.split(",") if k]
    fast = [speed(keep, args.rounds, args.budget) for keep in keeps]
    for row in fast:
        print(json.dumps({"keep": row["keep"], "factors": row["factors"],
                          "factors_fastest_call": row["factors_fastest_call"]}), flush=True)
    robust = None if args.skip_robustness else robustness(keeps[0], args.epochs, args.eps)
    print(json.dumps(robust, indent=1), flush=True)
    best = max(fast, key=lambda row: row["factors"]["total"])
    summary = {"total_speedup_by_keep": {str(r["keep"]): r["factors"]["total"] for r in fast},
               "int8_factor_by_keep": {str(r["keep"]): r["factors"]["int8"] for r in fast},
               "pruning_factor_by_keep": {str(r["keep"]): r["factors"]["pruning"] for r in fast},
               "best_keep": best["keep"], "total_speedup": best["factors"]["total"], "target": TARGET,
               "met_speed": best["factors"]["total"] >= TARGET,
               "robustness_keep": None if robust is None else keeps[0],
               "pgd_drop_points": None if robust is None else robust["pgd_drop_points"],
               "met_robustness": None if robust is None else robust["pgd_drop_points"] <= 100 * MAX_PGD_DROP}
    save_result(args.name, {"settings": {**vars(args), "keep": keeps}, "load_average_before": list(load_before),
                            "load_average_after": list(os.getloadavg()),
                            "seconds": time.perf_counter() - started, "speed": fast,
                            "robustness": robust, "summary": summary})


if __name__ == "__main__":
    main()
