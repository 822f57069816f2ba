"""Export cost and honesty of the export's own figures, side by side for zoo models at 3x32x32.

Per model: export wall time (median over repeats, models interleaved), fp32 / fp16 file sizes, fp32 and fp16
parity against PyTorch (untrained weights with randomised BatchNorm statistics, 256 uniform-random pixel inputs),
and the memory estimate at batch 32 (weights + peak live activations) against the peak-RSS growth that a fresh
onnxruntime process actually shows running that batch (CPU arena off, so freed buffers are not hidden).
Run: python -m benchmarks.export_zoo [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch
from torch import nn

from benchmarks.common import save_result
from edgerobust.export import export_onnx
from edgerobust.export.fp16 import to_fp16
from edgerobust.export.memory import estimate_memory
from edgerobust.export.onnx_export import save_onnx
from edgerobust.export.parity import compare, ort_session, run_onnx, run_torch
from edgerobust.models import build_model, count_parameters

MODELS = ["scnn2:16-32", "lenet5", "resnet20", "vgg-small", "mobilenetv2"]
SHAPE = (3, 32, 32)
BATCH = 32

MEASURE = r"""
import sys, numpy as np, onnxruntime as ort
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) * 1024
x = np.random.default_rng(0).random((int(sys.argv[2]), 3, 32, 32), dtype=np.float32)
base = hwm()
o = ort.SessionOptions(); o.enable_cpu_mem_arena = False; o.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])
s.run(None, {'input': x})
print(hwm() - base)
"""


def rss_growth(path: Path) -> int:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(BATCH)], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


def runtime_overhead(work: Path) -> int:
    """What onnxruntime itself adds (session, thread pool, input copy) for a graph that does nothing."""
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["input"], ["logits"])], "identity",
                                   [tensor("input", onnx.TensorProto.FLOAT, ["batch", *SHAPE])],
                                   [tensor("logits", onnx.TensorProto.FLOAT, ["batch", *SHAPE])])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    return rss_growth(save_onnx(proto, work / "identity.onnx"))


def build(spec: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(spec, SHAPE, 10, mean=[0.5] * 3, std=[0.25] * 3).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="export-zoo-"))
    models = {spec: build(spec) for spec in MODELS}
    times: dict[str, list[float]] = {spec: [] for spec in MODELS}
    for _ in range(args.repeats):  # interleave the models so machine noise spreads evenly
        for spec, model in models.items():
            started = time.perf_counter()
            export_onnx(model, SHAPE, work / f"{spec}.onnx", opset=17)
            times[spec].append(time.perf_counter() - started)
    inputs = torch.rand(256, *SHAPE, generator=torch.Generator().manual_seed(1)).numpy()
    fixed = runtime_overhead(work)
    rows = []
    for spec, model in models.items():
        path = work / f"{spec}.onnx"
        proto = onnx.load(path)
        half_path = save_onnx(to_fp16(proto), work / f"{spec}.fp16.onnx")
        reference = run_torch(model, inputs)
        fp32 = compare(reference, run_onnx(ort_session(path), inputs))
        fp16 = compare(reference, run_onnx(ort_session(half_path), inputs))
        estimate = estimate_memory(proto, BATCH)
        measured = rss_growth(path)
        rows.append({"model": spec, "parameters": count_parameters(model),
                     "export_seconds_median": statistics.median(times[spec]), "export_seconds": times[spec],
                     "fp32_bytes": path.stat().st_size, "fp16_bytes": half_path.stat().st_size,
                     "fp16_size_ratio": half_path.stat().st_size / path.stat().st_size,
                     "fp32_max_abs_diff": fp32["max_abs_diff"], "fp32_top1_agreement": fp32["top1_agreement"],
                     "fp16_max_rel_diff": fp16["max_rel_diff"], "fp16_top1_agreement": fp16["top1_agreement"],
                     "memory_estimate_bytes": estimate["estimate_bytes"],
                     "weights_bytes": estimate["weights_bytes"],
                     "activation_peak_bytes": estimate["activation_peak_bytes"],
                     "ort_peak_rss_growth_bytes": measured,
                     "measured_over_estimate": measured / estimate["estimate_bytes"],
                     "measured_less_fixed_over_estimate": (measured - fixed) / estimate["estimate_bytes"]})
        print(f"{spec:12s} export {rows[-1]['export_seconds_median']:.2f}s  fp32 |Δ| {fp32['max_abs_diff']:.2g}  "
              f"fp16 rel {fp16['max_rel_diff']:.2g} top1 {fp16['top1_agreement']:.3f}  "
              f"memory est {estimate['estimate_bytes'] / 2**20:.1f} MiB, ORT RSS +{measured / 2**20:.1f} MiB "
              f"(fixed {fixed / 2**20:.1f})")
    save_result("export_zoo", {
        "how": {"input_shape": list(SHAPE), "opset": 17, "repeats": args.repeats, "interleaved": True,
                "parity_inputs": "256 uniform-random pixels, untrained weights, randomised BatchNorm statistics",
                "memory_batch": BATCH, "rss": "VmHWM growth of a fresh python process from before session "
                "creation to after one run, onnxruntime CPU, arena off, 1 intra-op thread",
                "fixed_runtime_overhead": "the same growth for a one-node Identity graph at the same batch"},
        "ort_fixed_overhead_bytes": fixed,
        "models": rows})


if __name__ == "__main__":
    main()
