"""On a CUDA GPU, every computing part agrees with the CPU run on the same seed (skipped where there is no GPU).

Agreement is checked where it is exact by construction: both devices compute in float64 (the random starts are
drawn on the CPU by seeded generators and moved, so both devices attack from the same points), and then they
differ only in summation order, bounded as in tests/test_distributed.py (float32's ~1e-5 discrepancy after
training, scaled by 2**-29) and tests/rounding.py (one forward pass). Attack trajectories then agree to that
bound too: a sign step could flip only where a gradient component is within ~1e-13 of zero. Where the GPU runs in
float32 (export, bench), the bound is float32's, or TF32's (10-bit mantissa) for bench's timed torch-cuda runtime.

The CPU-backed device test (test_compute_device.py) checks the same plumbing on every machine.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from rounding import U32, summation_order_bound

from edgerobust.attacks import ATTACKS, get_attack
from edgerobust.config import BenchConfig, EvaluateConfig, ExportConfig
from edgerobust.data import load_dataset
from edgerobust.models import build_model
from edgerobust.training import TrainConfig, Trainer, build_training_loss
from edgerobust.training.api import TrainSetup
from edgerobust.training.loop import LoopSetup
from edgerobust.training.overfit_guard import CatastrophicOverfittingGuard

NO_GPU = ("needs a CUDA GPU (torch.cuda.is_available() is False here); the device plumbing is checked on a "
          "CPU-backed second device in test_compute_device.py")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)]

# float32 training runs that differ in summation order end ≤ ~1e-5 apart (tests/test_distributed.py); allowing
# 1e-3 and scaling by u64 / u32 = 2**-29 bounds the float64 ones, with a 50× margin
EXACT_TOL = 50 * (1e-3 / 2.0 ** -24) * 2.0 ** -53
PIXEL_TOL = 1e-6  # attack points: far above float64 drift (~1e-13), far below any attack step (≥ 1e-3)
TF32_UNIT = 2.0 ** -11
CUDA = torch.device("cuda")
DATA = load_dataset("digits", "train").subset(128)
TEST = load_dataset("digits", "test").subset(64)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("scnn2:8-16", DATA.input_shape, DATA.num_classes, DATA.mean, DATA.std)


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].cpu().double(), b[k].cpu().double(), atol=tol, rtol=0)
                                        for k in a)


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("method", ["natural", "pgd-at", "fgsm-rs", "trades"])
def test_training_on_cuda_matches_the_cpu(method):
    def run(device):
        loss = None if method == "natural" else build_training_loss(method, eps=0.1, steps=3)
        guard = CatastrophicOverfittingGuard(0.1, steps=3, batch_size=64)
        setup = LoopSetup(loss=loss, eval_data=TEST, callbacks=[guard], dtype=torch.float64)
        trainer = Trainer(_model(), DATA, TrainConfig(epochs=2, batch_size=32, seed=1), setup, progress=False,
                          device=device)
        return trainer, trainer.fit().history

    cpu, cpu_history = run("cpu")
    gpu, gpu_history = run("cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    assert _close(gpu.model.state_dict(), cpu.model.state_dict(), EXACT_TOL)
    for mine, theirs in zip(gpu_history, cpu_history, strict=True):
        assert mine["test_accuracy"] == theirs["test_accuracy"]  # counts: equal unless a logit ties within 1e-10
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=EXACT_TOL)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_on_cuda_matches_the_cpu(name):
    model = _model().double().eval()
    x, y = TEST.images[:32].double(), TEST.labels[:32]
    minimal = ATTACKS.get(name).minimal
    attack = get_attack(name, **({} if minimal else {"eps": 0.1}))
    cpu = attack(model, x, y)
    gpu_model = copy.deepcopy(model).to(CUDA)
    gpu = attack(gpu_model, x.to(CUDA), y.to(CUDA))
    assert gpu.device.type == "cuda"
    assert float((gpu.cpu() - cpu).abs().max()) <= PIXEL_TOL
    with torch.no_grad():
        assert torch.equal(gpu_model(gpu).argmax(1).cpu(), model(cpu).argmax(1))


def test_standard_suite_on_cuda_matches_the_cpu():
    from edgerobust.evaluation.suite import standard_suite

    model = _model().double().eval()
    x, y = TEST.images.double(), TEST.labels
    cpu = standard_suite(model, x, y, 0.1, steps=20, square_queries=200)
    gpu = standard_suite(copy.deepcopy(model).to(CUDA), x, y, 0.1, steps=20, square_queries=200)
    assert gpu.cumulative == cpu.cumulative and torch.equal(gpu.robust_mask, cpu.robust_mask)


def test_evaluate_run_on_cuda_matches_the_cpu(tmp_path, float64_default):
    from edgerobust.evaluation.api import evaluate_run
    from edgerobust.training.api import train_model

    run = train_model(tmp_path / "run", "scnn2:8-16", "digits", TrainConfig(epochs=1, batch_size=64),
                      TrainSetup(device="cpu"), progress=False)
    settings = dict(n=48, steps=10, square_queries=100, curve=True, curve_grid=[0, 0.1, 0.3], curve_steps=5,
                    masking_steps=3)
    cpu = evaluate_run(run, EvaluateConfig(**settings), device="cpu", progress=False)
    gpu = evaluate_run(run, EvaluateConfig(**settings), device="cuda", progress=False)
    assert gpu["device"]["type"] == "cuda"
    for key in ("clean_accuracy", "robust_accuracy", "curve", "masking"):
        assert gpu[key] == cpu[key], key
    assert gpu["suite"]["cumulative"] == cpu["suite"]["cumulative"]


def test_compression_on_cuda_matches_the_cpu(tmp_path, float64_default):
    """ADMM, masked retraining and physical removal (torch-pruning tracing on the GPU), in float64."""
    from edgerobust.compress.api import CompressConfig, CompressSetup, compress_model
    from edgerobust.io import load_torch

    def run(out, device):
        setup = CompressSetup(device=device, evaluate={"eps": 0.1, "pgd_steps": 5, "n": 64})
        return compress_model("scnn2:8-16", out, CompressConfig(keep=0.5, admm_epochs=2, retrain_epochs=1),
                              TrainConfig(epochs=2, batch_size=64, seed=2), setup, progress=False)

    cpu, gpu = run(tmp_path / "cpu", "cpu"), run(tmp_path / "gpu", "cuda")
    assert gpu.manifest["compression"]["device"]["type"] == "cuda"
    assert gpu.manifest["compression"]["removed_channels"] == cpu.manifest["compression"]["removed_channels"]
    for stage in ("pretrain", "admm", "retrain", "."):
        a, b = load_torch(tmp_path / "cpu" / stage / "model.pt"), load_torch(tmp_path / "gpu" / stage / "model.pt")
        assert _close(a, b, EXACT_TOL), stage
    rows = zip(gpu.manifest["compression"]["evaluation"]["rows"], cpu.manifest["compression"]["evaluation"]["rows"],
               strict=True)
    assert all(g["clean"] == c["clean"] and g["pgd5"] == c["pgd5"] for g, c in rows)


def test_export_on_cuda_keeps_fp16_parity(tmp_path):
    from edgerobust.export.api import export_run
    from edgerobust.export.parity import run_torch
    from edgerobust.training.api import train_model

    run = train_model(tmp_path / "run", "scnn2:8-16", "digits", TrainConfig(epochs=1, batch_size=64),
                      TrainSetup(device="cpu"), progress=False)
    result = export_run(run, ExportConfig(target="h200", fp16=True, int8=False, calibration=0), device="cuda",
                        progress=False)
    assert result.summary["device"]["type"] == "cuda"
    assert set(result.summary["parity"]) == {"fp32", "fp16"} and all(
        p["passed"] for p in result.summary["parity"].values())
    golden_in = np.load(result.bundle / "golden_inputs.npy")
    golden_out = np.load(result.bundle / "golden_outputs.npy")  # computed on the GPU in full float32
    model = run.load_model()
    assert np.abs(golden_out - run_torch(model, golden_in)).max() <= summation_order_bound(model, golden_in, U32)


def test_bench_torch_cuda(tmp_path):
    from edgerobust.bench import bench_run
    from edgerobust.training.api import train_model

    run = train_model(tmp_path / "run", "scnn2:8-16", "digits", TrainConfig(epochs=1, batch_size=64),
                      TrainSetup(device="cpu"), progress=False)
    record = bench_run(run, BenchConfig(target="h200", runtimes=["torch-cuda"], batches=(1, 8), repeats=5, warmup=2,
                       memory=False), device="cuda", progress=False)
    assert record["device"]["type"] == "cuda"
    assert {r["batch"] for r in record["results"] if r["runtime"] == "torch-cuda"} == {1, 8}
    assert all(r["p50_ms"] > 0 for r in record["results"])
    parity = record["parity"]["torch-cuda"]
    model = run.load_model()
    images = load_dataset("digits", "test").images[:parity["images"]]
    # torch-cuda is timed as users run it: cuDNN may use TF32 (10-bit mantissa) for float32 convolutions
    bound = summation_order_bound(model, images, TF32_UNIT)
    assert parity["max_abs_diff_vs_torch_cpu"] <= bound
    with torch.no_grad():  # decisions must agree wherever the CPU's top-2 margin exceeds twice that bound
        top2 = model(images).topk(2, dim=1).values
    assert parity["top1_agreement"] >= float(((top2[:, 0] - top2[:, 1]) > 2 * bound).float().mean())
