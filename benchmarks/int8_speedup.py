"""onnxruntime int8 (edgerobust's export path) against fp32 and fp16 on the CPU, and against a bare quantize_static.

For ResNet-20, VGG-small and MobileNetV2 (untrained, CIFAR-shaped) four graphs are made: fp32 (export's graph), fp16
(onnxruntime's float16 converter, export's fp16 path), int8 through `edgerobust.export.quantize.quantize_int8` (what
`export` ships: QDQ, per-channel symmetric int8 weights, uint8 activations, minmax on 64 calibration inputs) and
int8 from a bare `quant_pre_process` + `quantize_static` call with the same settings. All four run in onnxruntime
CPU sessions with the runner's settings and are timed call by call in turn (fp32, fp16, int8, bare, fp32, ...) at
batch 1 and 32 with 1 and 2 threads, so the load of other processes on the shared cores hits all alike; a ratio is
p50 over p50 of all rounds, and beside it the ratio of the fastest calls (`*_speedup_min`: the least-disturbed call
of each graph, what the arithmetic costs when the shared cores happen to be free; `int8_over_bare_min` likewise).
The int8 graph's operators after onnxruntime's own optimisation are recorded (`int8_optimized_ops`): every
convolution fused into QLinearConv, so no layer falls back to float between the input's QuantizeLinear and the
output's DequantizeLinear. A fifth graph, int8-mixed, is export's `--int8-exclude measure` (the convolutions outside
onnxruntime's x86 symmetric int8 kernel, e.g. a 3-channel stem, left fp32 if the whole graph then runs faster at
export; `int8_mixed` records the choice, both times and the float operators), timed in the same rounds.
Accuracy: the models are untrained, so each artifact's top-1 agreement with fp32 on 256 inputs.
Targets: int8 >= 2x fp32 at batch 32 for all three; edgerobust's int8 within 5% of the bare quantize_static.
Run: python -m benchmarks.int8_speedup [--rounds 3] [--budget 0.1] [--models resnet20]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from benchmarks.common import save_result
from edgerobust.bench import TimingPlan, summarize, time_calls
from edgerobust.bench.api import export_for_bench
from edgerobust.export.fp16 import to_fp16
from edgerobust.export.quantize import Int8Settings, _reader, float_operators, int8_record, quantize_int8
from edgerobust.models import build_model, count_flops

CIFAR = (3, 32, 32)
MODELS = ("resnet20", "vgg-small", "mobilenetv2")
BATCHES, THREADS = (1, 32), (1, 2)
TARGET_SPEEDUP, BARE_WITHIN = 2.0, 0.05


def bare_int8(source: Path, out: Path, calibration: np.ndarray) -> Path:
    """onnxruntime's quantizer called directly, with the settings export uses (the reference for 'adds nothing')."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_suffix(".prepared.onnx")
    quant_pre_process(str(source), str(prepared))
    quantize_static(str(prepared), str(out), _reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return out


def session(path: Path, threads: int) -> ort.InferenceSession:
    """The artifact opened as the runner opens it (runner/ort_options.py: its settings, less the optimisers the
    artifact's metadata skips)."""
    from edgerobust.runner.ort_options import open_session

    return open_session(ort, str(path), threads, ["CPUExecutionProvider"])[0]


def optimized_ops(path: Path) -> dict[str, int]:
    """Operator counts of the graph onnxruntime actually runs (ORT_ENABLE_ALL, as the runner's sessions)."""
    from collections import Counter

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.15, help="fp32 seconds per batch, threads and round")
    parser.add_argument("--models", default="", help="comma-separated subset of " + ",".join(MODELS))
    args = parser.parse_args()
    torch.manual_seed(0)
    wanted = [m for m in args.models.split(",") if m] or list(MODELS)
    generator = torch.Generator().manual_seed(0)
    calibration = torch.rand((64, *CIFAR), generator=generator).numpy()
    probe = torch.rand((256, *CIFAR), generator=generator).numpy()
    rows, artifacts = [], {}
    load_before, started = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for spec in wanted:
            module = build_model(spec, CIFAR, 10).eval()
            base = Path(tmp) / spec
            fp32 = export_for_bench(module, CIFAR, base.with_suffix(".fp32.onnx"), 17)
            proto = onnx.load(str(fp32))
            paths = {"fp32": fp32, "fp16": base.with_suffix(".fp16.onnx"), "int8": base.with_suffix(".int8.onnx"),
                     "int8-bare": base.with_suffix(".bare.onnx"), "int8-mixed": base.with_suffix(".mixed.onnx")}
            onnx.save(to_fp16(proto), str(paths["fp16"]))
            made = time.perf_counter()
            onnx.save(quantize_int8(proto, calibration, CIFAR, Int8Settings()), str(paths["int8"]))
            quantize_seconds = time.perf_counter() - made
            bare_int8(fp32, paths["int8-bare"], calibration)
            mixed = quantize_int8(proto, calibration, CIFAR, Int8Settings(exclude="measure"))
            onnx.save(mixed, str(paths["int8-mixed"]))
            same_graph = onnx.load(str(paths["int8"])).graph == onnx.load(str(paths["int8-bare"])).graph
            outputs = {}
            for name, path in paths.items():
                s = session(path, 2)
                outputs[name] = np.concatenate([s.run(None, {"input": probe[i:i + 64]})[0] for i in range(0, 256, 64)])
            agreement = {name: float((out.argmax(1) == outputs["fp32"].argmax(1)).mean())
                         for name, out in outputs.items()}
            artifacts[spec] = {"flops_per_image": count_flops(module, CIFAR),
                               "bytes": {n: p.stat().st_size for n, p in paths.items()},
                               "top1_agreement_with_fp32": agreement, "int8_quantize_seconds": quantize_seconds,
                               "int8_graph_identical_to_bare": same_graph,
                               "int8_optimized_ops": optimized_ops(paths["int8"]),
                               "int8_mixed_float_operators": float_operators(mixed),
                               "int8_mixed": {k: v for k, v in int8_record(mixed).items()
                                              if k in ("chosen", "measured_fastest_call_ms")},
                               "fp32_optimized_ops": optimized_ops(paths["fp32"]),
                               "accuracy": "untrained model: top-1 agreement with fp32 on 256 uniform inputs"}
            for threads in THREADS:
                sessions = {name: session(path, threads) for name, path in paths.items()}
                for batch in BATCHES:
                    x = np.ascontiguousarray(calibration[np.arange(batch) % len(calibration)])  # fp16 keeps fp32 io
                    feeds = {n: {"input": x} for n in sessions}
                    first = time_calls(lambda s=sessions["fp32"], f=feeds["fp32"]: s.run(None, f), TimingPlan(1, 2))
                    calls = max(3, min(100, int(args.budget / max(min(first), 1e-6))))  # sized to fp32's time
                    durations: dict[str, list[float]] = {n: [] for n in sessions}
                    for _ in range(args.rounds * calls):  # one call of each graph in turn: paired under one load
                        for name, s in sessions.items():
                            durations[name] += time_calls(lambda s=s, f=feeds[name]: s.run(None, f), TimingPlan(0, 1))
                    stats = {n: summarize(d) for n, d in durations.items()}
                    row = {"model": spec, "batch": batch, "threads": threads,
                           **{f"{n}_p50_ms": stats[n]["p50_ms"] for n in stats},
                           **{f"{n}_min_ms": stats[n]["min_ms"] for n in stats},
                           **{f"{n}_calls": stats[n]["n"] for n in stats},
                           "int8_speedup_min": stats["fp32"]["min_ms"] / stats["int8"]["min_ms"],
                           "int8_speedup": stats["fp32"]["p50_ms"] / stats["int8"]["p50_ms"],
                           "fp16_speedup": stats["fp32"]["p50_ms"] / stats["fp16"]["p50_ms"],
                           "int8_mixed_speedup": stats["fp32"]["p50_ms"] / stats["int8-mixed"]["p50_ms"],
                           "int8_mixed_speedup_min": stats["fp32"]["min_ms"] / stats["int8-mixed"]["min_ms"],
                           "int8_over_bare": stats["int8"]["p50_ms"] / stats["int8-bare"]["p50_ms"],
                           "int8_over_bare_min": stats["int8"]["min_ms"] / stats["int8-bare"]["min_ms"]}
                    rows.append(row)
                    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()
                                      if not k.endswith("_calls")}), flush=True)
    batch32 = [r for r in rows if r["batch"] == 32]
    summary = {
        "int8_speedup_batch32_min": min(r["int8_speedup"] for r in batch32),
        "int8_speedup_batch32_by_model": {m: max(r["int8_speedup"] for r in batch32 if r["model"] == m)
                                          for m in wanted},
        "target_speedup": TARGET_SPEEDUP,
        "met_speedup": all(max(r["int8_speedup"] for r in batch32 if r["model"] == m) >= TARGET_SPEEDUP
                           for m in wanted),
        "int8_speedup_min_batch32_by_model": {m: max(r["int8_speedup_min"] for r in batch32 if r["model"] == m)
                                              for m in wanted},
        "met_speedup_min": all(max(r["int8_speedup_min"] for r in batch32 if r["model"] == m) >= TARGET_SPEEDUP
                               for m in wanted),
        "int8_mixed_speedup_min_batch32_by_model": {m: max(r["int8_mixed_speedup_min"] for r in batch32
                                                           if r["model"] == m) for m in wanted},
        "int8_mixed_speedup_batch32_by_model": {m: max(r["int8_mixed_speedup"] for r in batch32 if r["model"] == m)
                                                for m in wanted},
        "int8_over_bare_max_deviation": max(abs(r["int8_over_bare"] - 1) for r in rows),
        "bare_within": BARE_WITHIN,
        "met_bare": all(abs(r["int8_over_bare"] - 1) <= BARE_WITHIN for r in rows),
        "int8_over_bare_min_max_deviation": max(abs(r["int8_over_bare_min"] - 1) for r in rows),
        "met_bare_min": all(abs(r["int8_over_bare_min"] - 1) <= BARE_WITHIN for r in rows),
        "note": "the graphs are identical when edgerobust adds nothing: deviations from 1 are timing noise on "
                "shared cores",
    }
    identical = {m: artifacts[m]["int8_graph_identical_to_bare"] for m in wanted}
    print(json.dumps(summary, indent=1))
    save_result("int8_speedup", {
        "settings": {"rounds": args.rounds, "budget_s": args.budget, "batches": BATCHES, "threads": THREADS,
                     "calibration": "64 uniform random inputs, seed 0", "int8": Int8Settings().to_dict(),
                     "onnxruntime": ort.__version__},
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "seconds": time.perf_counter() - started, "artifacts": artifacts, "int8_graph_identical_to_bare": identical,
        "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
