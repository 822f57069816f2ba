"""Parity: the exported graph under onnxruntime against the PyTorch model on the same real inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ..compute_device import exact_fp32, to_model
from ..errors import EdgeRobustError
from ..models.mode import eval_mode
from ..runner.parity import compare, within_tolerance
from .onnx_export import INPUT_NAME

__all__ = ["check_parity", "compare", "ort_session", "run_onnx", "run_torch"]


def ort_session(path: str | Path, threads: int = 1, providers: list[str] | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/NotImplemented types; name what it said
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgeRobustError(f"onnxruntime cannot load {Path(path).name}: {text}") from None


def run_onnx(session: ort.InferenceSession, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    """Outputs in float32, fed in chunks so dynamic batch sizes are exercised too."""
    feed_type = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    outs = [session.run(None, {INPUT_NAME: inputs[i:i + batch].astype(feed_type)})[0]
            for i in range(0, len(inputs), batch)]
    return np.concatenate(outs).astype(np.float32)


def run_torch(model: nn.Module, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    """The model's float32 outputs on its own device (full float32 there: no TF32), as a CPU array."""
    with torch.no_grad(), exact_fp32(), eval_mode(model):
        outs = [model(to_model(model, torch.from_numpy(inputs[i:i + batch]))).float().cpu().numpy()
                for i in range(0, len(inputs), batch)]
    return np.concatenate(outs).astype(np.float32)


def check_parity(reference: np.ndarray, onnx_path: str | Path, inputs: np.ndarray, tolerance: float,
                 label: str = "fp32", relative: bool = False, threads: int = 1) -> dict:
    """Compare onnxruntime outputs with the PyTorch `reference` outputs; raise beyond `tolerance`.

    `relative` measures the difference as a fraction of the largest |logit| (for fp16, whose error scales with it).
    """
    outputs = run_onnx(ort_session(onnx_path, threads), inputs)
    figures = compare(reference, outputs)
    measured, passed = within_tolerance(figures, tolerance, "relative" if relative else "absolute")
    figures.update(precision=label, tolerance=tolerance, tolerance_kind="relative" if relative else "absolute",
                   passed=passed, runtime=f"onnxruntime {ort.__version__} CPU")
    if not figures["passed"]:
        raise EdgeRobustError(f"{label} export does not match PyTorch: max {'relative' if relative else 'absolute'} "
                              f"difference {measured:.3g} > tolerance {tolerance:g} "
                              f"(top-1 agreement {figures['top1_agreement']:.3f}); the export was not written")
    return figures


def check_agreement(fp32_path: str | Path, path: str | Path, points: np.ndarray, labels: np.ndarray,
                    golden: np.ndarray, golden_outputs: np.ndarray, golden_labels: np.ndarray,
                    min_agreement: float, max_drop: float, label: str = "int8") -> dict:
    """The "agreement" rule (runner/parity.py) for an artifact without a derived bound (int8): top-1 agreement with
    the fp32 artifact and the clean accuracy drop on the test `points`, and on the golden inputs against the golden
    outputs (what the runner's `verify` checks on the device, with the same limits). Passing means both pass."""
    from ..runner.parity import agreement

    candidate = ort_session(path)
    test = agreement(run_onnx(candidate, points), run_onnx(ort_session(fp32_path), points), labels, min_agreement,
                     max_drop)
    test["test_passed"] = test["passed"]
    outputs = run_onnx(candidate, golden)
    on_golden = {**agreement(outputs, golden_outputs, golden_labels, min_agreement, max_drop), "points": len(golden)}
    figures = {**compare(golden_outputs, outputs), **{k: test[k] for k in ("top1_agreement", "accuracy",
                                                                         "reference_accuracy", "accuracy_drop",
                                                                         "allowed_drop", "test_passed")},
               "min_top1_agreement": min_agreement, "max_accuracy_drop": max_drop, "points": len(points),
               "golden": on_golden, "precision": label, "tolerance": max_drop, "tolerance_kind": "agreement",
               "passed": bool(test["passed"] and on_golden["passed"]),
               "runtime": f"onnxruntime {ort.__version__} CPU"}
    return figures


def agreement_line(figures: dict, label: str = "int8") -> str:
    """One line with both accuracies: why an artifact fails the agreement rule."""
    failed = not figures.get("test_passed", True)
    where, got = ("test", figures) if failed or figures["golden"]["passed"] else ("golden", figures["golden"])
    points = got["points"]
    allowed = got.get("allowed_drop", figures["max_accuracy_drop"])
    return (f"{label} accuracy {got['accuracy']:.2%} against fp32 {got['reference_accuracy']:.2%} on {points} {where} "
            f"points: drop {got['accuracy_drop'] * 100:.2f} points (at most {allowed * 100:.2f}), "
            f"top-1 agreement {got['top1_agreement']:.3f} (at least {figures['min_top1_agreement']:g})")
