"""Latency benchmarking: exact statistics on an injected clock, honest runtime availability, bench.json, CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from cli_helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.bench import (
    RUNTIMES,
    PeakRSS,
    Session,
    TimingPlan,
    achieved_gflops,
    bench_run,
    gemm_ceiling,
    get_runtime,
    require_runtime,
    run_mode,
    summarize,
    time_calls,
)
from edgerobust.config import BenchConfig, ExportConfig
from edgerobust.data import load_dataset
from edgerobust.errors import EdgeRobustError, UnknownNameError
from edgerobust.run import RunDir

MS = 1_000_000  # nanoseconds


class ScriptedClock:
    """Returns the given timestamps (ns) in order; counts how often it was read."""

    def __init__(self, stamps):
        self.stamps, self.reads = list(stamps), 0

    def __call__(self) -> int:
        self.reads += 1
        return self.stamps.pop(0)


class SteppingClock:
    """A clock that only moves when told to: the fake session below advances it by known amounts."""

    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeSession(Session):
    """prepare costs 2 ms, run costs 3 ms, on the stepping clock."""

    def __init__(self, clock: SteppingClock):
        self.clock, self.prepared, self.ran = clock, 0, 0

    def prepare(self, batch):
        self.clock.now += 2 * MS
        self.prepared += 1
        return batch

    def run(self, prepared):
        self.clock.now += 3 * MS
        self.ran += 1


# -- timing statistics ---------------------------------------------------------------------------------------------
def test_statistics_are_exact_on_an_injected_clock():
    durations_ms = list(range(1, 101))  # 1..100 ms, presented shuffled
    order = np.random.default_rng(0).permutation(durations_ms)
    stamps, t = [], 0
    for d in order:
        stamps += [t, t + int(d) * MS]
        t += int(d) * MS + 7 * MS  # gaps between calls must not count
    clock, calls = ScriptedClock(stamps), []
    durations = time_calls(lambda: calls.append(1), TimingPlan(warmup=5, repeats=100), clock=clock)
    assert len(calls) == 105 and clock.reads == 200  # warm-up calls are run but never timed
    stats = summarize(durations)
    assert stats["n"] == 100
    assert stats["p50_ms"] == pytest.approx(50.5, abs=1e-9)
    assert stats["p90_ms"] == pytest.approx(90.1, abs=1e-9)
    assert stats["p99_ms"] == pytest.approx(99.01, abs=1e-9)
    assert stats["mean_ms"] == pytest.approx(50.5, abs=1e-9)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["max_ms"] == pytest.approx(100.0)
    assert stats["std_ms"] == pytest.approx(float(np.std(durations_ms)), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**10), min_size=1, max_size=60))
def test_time_calls_returns_exactly_the_injected_durations(durations_ns):
    stamps, t = [], 10**12
    for d in durations_ns:
        stamps += [t, t + d]
        t += d + 1
    measured = time_calls(lambda: None, TimingPlan(warmup=0, repeats=len(durations_ns)), clock=ScriptedClock(stamps))
    assert measured == pytest.approx([d * 1e-9 for d in durations_ns], rel=0, abs=1e-15)
    stats = summarize(measured)
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert stats["min_ms"] - 1e-9 <= stats["mean_ms"] <= stats["max_ms"] + 1e-9


def test_bad_timing_plans_are_one_line_errors():
    with pytest.raises(EdgeRobustError, match="--repeats"):
        TimingPlan(warmup=1, repeats=0).validate()
    with pytest.raises(EdgeRobustError, match="--warmup"):
        TimingPlan(warmup=-1, repeats=3).validate()


# -- modes ---------------------------------------------------------------------------------------------------------
def test_modes_time_exactly_what_they_say():
    data = load_dataset("digits", "test").subset(40)
    plan = TimingPlan(warmup=2, repeats=10)
    clock = SteppingClock()
    latency = run_mode("latency", FakeSession(clock), data, [1, 4], plan, clock=clock)
    assert [r["mean_ms"] for r in latency] == pytest.approx([3.0, 3.0])  # input prepared outside the timer
    assert [r["throughput_ips"] for r in latency] == pytest.approx([1000 / 3, 4000 / 3])
    assert [r["p99_ms"] for r in latency] == pytest.approx([3.0, 3.0])
    batched = run_mode("batched", FakeSession(clock), data, [16], plan, clock=clock)
    assert batched[0]["mean_ms"] == pytest.approx(5.0) and batched[0]["includes_loading"]  # Alg. 5: loading counts
    session = FakeSession(clock)
    per_image = run_mode("per-image", session, data, [1], TimingPlan(warmup=3, repeats=1000), clock=clock)
    assert per_image[0]["mean_ms"] == pytest.approx(3.0)  # Alg. 4: images already in memory
    assert per_image[0]["images"] == 40 and session.prepared == 40 and session.ran == 43
    with pytest.raises(UnknownNameError, match="valid bench modes"):
        run_mode("nosuch", session, data, [1], plan)


# -- runtimes ------------------------------------------------------------------------------------------------------
def test_runtime_availability_is_reported_honestly():
    cuda = torch.cuda.is_available()
    assert get_runtime("torch-cpu").availability() == (True, "")
    assert get_runtime("ort-cpu").availability()[0]
    for name in ("torch-cuda", "torch-compile-cuda", "ort-cuda", "ort-tensorrt", "tensorrt"):
        ok, reason = get_runtime(name).availability()
        if not cuda:
            assert not ok and reason, name
    if not cuda:
        assert "GPU" in get_runtime("torch-cuda").availability()[1]
        with pytest.raises(EdgeRobustError, match="runtime torch-cuda is not available here: no CUDA GPU"):
            require_runtime("torch-cuda")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EdgeRobustError, match=r"tensorrt is not importable \(pip install tensorrt, edgerobust's"):
            require_runtime("tensorrt")
    with pytest.raises(EdgeRobustError, match="cannot run fp16"):
        require_runtime("torch-cpu", "fp16")
    with pytest.raises(UnknownNameError, match="valid runtimes: .*ort-cpu"):
        require_runtime("nosuch")


def test_every_runtime_record_has_one_implementation_that_reads_it():
    from edgerobust.devices import RUNTIME_SPECS, profile_runtimes

    assert RUNTIMES.names() == RUNTIME_SPECS.names()
    assert set(profile_runtimes()) < set(RUNTIMES.names())  # torch-compile-cuda is bench-only
    for name in RUNTIMES:
        runtime, spec = get_runtime(name), RUNTIME_SPECS.get(name)
        assert (runtime.name, runtime.device, runtime.precisions, runtime.extra) == (
            spec.name, spec.device, spec.precisions, spec.install)
        assert RUNTIMES.help(name) == spec.description
        assert runtime.describe()["input"] == spec.input


# -- memory and ceiling --------------------------------------------------------------------------------------------
def test_peak_rss_sees_a_short_lived_allocation():
    size = 64 * 2**20
    with PeakRSS(interval_s=0.001) as rss:
        block = np.ones(size // 8)  # touched, so resident
        import time

        time.sleep(0.05)
        del block
    assert rss.peak_bytes - rss.baseline_bytes >= size // 2


def test_gemm_ceiling_and_achieved_rate():
    ceiling = gemm_ceiling("cpu", threads=1, n=128, repeats=2)
    assert ceiling["gflops"] > 0 and ceiling["n"] == 128 and ceiling["threads"] == 1
    assert achieved_gflops(2_000_000, 8, 0.004) == pytest.approx(4.0)  # 16 MFLOP in 4 ms


# -- bench_run and bench.json --------------------------------------------------------------------------------------
@pytest.fixture
def bench_copy(digits_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(digits_run.path, path)
    return path


def test_bench_run_writes_every_recording_field(bench_copy):
    record = bench_run(bench_copy, BenchConfig(target="x86-cpu", batches=[1, 4], repeats=5, warmup=2, threads=1),
                       progress=False)
    written = json.loads((bench_copy / "bench.json").read_text())
    assert written["results"] == json.loads(json.dumps(record["results"]))
    for key in ("target", "host", "versions", "threads", "precision", "warmup", "repeats", "mode", "ceilings", "model",
                "runtimes", "skipped_runtimes", "parity", "input", "clock"):
        assert key in written, key
    assert written["target"]["name"] == "x86-cpu" and written["threads"] == 1
    assert written["skipped_runtimes"]["ort-openvino"]  # listed with its reason, not silently dropped
    assert {(r["runtime"], r["batch"]) for r in written["results"]} == {(n, b) for n in ("ort-cpu", "torch-cpu")
                                                                         for b in (1, 4)}
    for row in written["results"]:
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_ips", "runtime_version",
                    "achieved_gflops", "ceiling_fraction", "warmup", "repeats", "precision", "batch"):
            assert row[key] is not None, key
        assert row["memory"]["peak_rss_bytes"] > 0 and row["repeats"] == 5
    assert written["parity"]["ort-cpu"]["max_abs_diff_vs_torch_cpu"] < 1e-4
    assert written["parity"]["ort-cpu"]["top1_agreement"] == 1.0
    assert written["model"]["flops_per_image"] > 0 and written["model"]["onnx_bytes"]["fp32"] > 0
    run = RunDir.open(bench_copy)
    assert run.manifest["bench"]["p50_ms"]["ort-cpu@1"] == written["results"][0]["p50_ms"]
    assert run.manifest["artifacts"]["bench"]["path"] == "bench.json"


def test_bench_run_figures_follow_the_injected_clock(bench_copy):
    ticks = iter(range(0, 10**15, MS // 2))  # every clock read advances 0.5 ms: each timed call lasts 0.5 ms
    record = bench_run(bench_copy, BenchConfig(target="x86-cpu", runtimes=["ort-cpu"], batches=[2], repeats=4,
                       warmup=1, threads=1, memory=False), clock=lambda: next(ticks), progress=False, write=False)
    row = record["results"][0]
    assert row["p50_ms"] == pytest.approx(0.5) and row["p99_ms"] == pytest.approx(0.5) and row["std_ms"] == 0
    assert row["throughput_ips"] == pytest.approx(4000)
    assert row["achieved_gflops"] == pytest.approx(record["model"]["flops_per_image"] * 2 / 0.0005 / 1e9)
    assert not (bench_copy / "bench.json").exists()


def test_bench_refuses_what_it_cannot_measure_honestly(bench_copy):
    with pytest.raises(EdgeRobustError, match="jetson-nano is aarch64 but this machine is"):
        bench_run(bench_copy, BenchConfig(target="jetson-nano"), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(EdgeRobustError, match="none of target h100's runtimes can run here"):
            bench_run(bench_copy, BenchConfig(target="h100"), progress=False)
    with pytest.raises(EdgeRobustError, match="does not support fp16"):
        bench_run(bench_copy, BenchConfig(target="x86-cpu", precision="fp16"), progress=False)
    assert not (bench_copy / "bench.json").exists()


# -- the command ---------------------------------------------------------------------------------------------------
def test_bench_command_table_and_json(bench_copy):
    code, out, err = run_cli("bench", bench_copy, "--batch", "1,2", "--repeats", "3", "--warmup", "1",
                             "--threads", "1", "--runtime", "ort-cpu,torch-cpu", "-q", "--no-memory")
    assert code == 0, err
    assert "ort-cpu" in out and "torch-cpu" in out and "p50" in out and "GEMM ceiling" in out
    assert json.loads((bench_copy / "bench.json").read_text())["batches"] == [1, 2]
    code, out, _ = run_cli("bench", "--list-runtimes")
    assert code == 0 and "torch-cuda" in out and "tensorrt" in out


@pytest.mark.parametrize("args, message", [
    (("--target", "nosuch"), "unknown target 'nosuch'"),
    (("--runtime", "nosuch"), "unknown runtime 'nosuch'"),
    (("--mode", "nosuch"), "unknown bench mode 'nosuch'"),
    (("--batch", "1,x"), "--batch '1,x' must be comma-separated integers"),
    (("--batch", "0"), "must list positive integers"),
    (("--repeats", "0"), "--repeats = 0 must be at least 1"),
])
def test_bench_bad_input_is_one_line(bench_copy, args, message):
    code, out, err = run_cli("bench", bench_copy, "-q", *args)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert not (bench_copy / "bench.json").exists()


def test_bench_missing_gpu_runtime_is_one_line(bench_copy, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the refusal is for machines without one")
    code, _, err = run_cli("bench", bench_copy, "--runtime", "torch-cuda", "-q")
    assert code == 2 and "runtime torch-cuda is not available here" in err and "GPU" in err
    code, _, err = run_cli("bench", tmp_path / "nothing", "-q")
    assert code == 2 and "does not exist" in err


def test_bench_times_the_exported_bundle_and_refuses_a_tampered_one(bench_copy):
    from edgerobust.export.api import export_run

    result = export_run(bench_copy, ExportConfig(target="x86-cpu", golden=8, calibration=0), progress=False)
    record = bench_run(bench_copy, BenchConfig(target="x86-cpu", runtimes=["ort-cpu"], batches=[1], repeats=3,
                       warmup=1, threads=1, memory=False), progress=False, write=False)
    assert "sha256 verified" in record["onnx_source"] and str(result.bundle) in record["onnx_source"]
    onnx = result.bundle / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(EdgeRobustError, match="model.onnx has been modified"):
        bench_run(bench_copy, BenchConfig(target="x86-cpu", runtimes=["ort-cpu"], batches=[1], repeats=3),
                  progress=False)


def test_pipeline_step_and_report_section(bench_copy):
    from edgerobust.pipeline import PipelineContext, run_steps
    from edgerobust.report import render_report

    run = RunDir.open(bench_copy)
    recipe = {"origin": "test", "bench": {"batches": [1, 2], "repeats": 3, "warmup": 1, "threads": 1,
                                          "runtimes": ["ort-cpu", "torch-cpu"]}}
    ctx = run_steps(PipelineContext(out=bench_copy.parent, recipe=recipe, progress=False, run=run), ["bench"])
    rows = {what for step, what, _ in ctx.summary if step == "bench"}
    assert {"ort-cpu batch 1 p50 ms", "torch-cpu batch 2 p50 ms", "seconds"} <= rows
    text = render_report(RunDir.open(bench_copy)).read_text()
    assert "## Latency" in text and "| ort-cpu |" in text and "GEMM ceiling" in text
    assert (bench_copy / "figures" / "bench_latency.png").stat().st_size > 0
    assert (bench_copy / "figures" / "bench_throughput.png").stat().st_size > 0
    bad = PipelineContext(out=bench_copy.parent, recipe={"origin": "test", "bench": {"repeat": 3}}, run=run)
    with pytest.raises(EdgeRobustError, match=r"\[bench\]: unknown key\(s\) repeat"):
        run_steps(bad, ["bench"])


def test_bench_command_compares_models_in_marshall_modes(bench_copy, tmp_path):
    from edgerobust.training import TrainConfig
    from edgerobust.training.api import train_model

    other = train_model(tmp_path / "mlp", "mlp:16", "digits", TrainConfig(epochs=1, augment=False), progress=False)
    code, out, err = run_cli("bench", bench_copy, other.path, "--mode", "batched", "--batch", "100", "--repeats", "3",
                             "--warmup", "1", "--threads", "1", "--runtime", "ort-cpu", "-q", "--no-memory")
    assert code == 0, err
    assert "scnn2:8-16" in out and "mlp:16" in out and "batched" in out
    for path in (bench_copy, other.path):
        row = json.loads((path / "bench.json").read_text())["results"][0]
        assert row["mode"] == "batched" and row["batch"] == 100 and row["includes_loading"]
    code, out, err = run_cli("bench", bench_copy, "--mode", "per-image", "--repeats", "20", "--warmup", "2",
                             "--threads", "1", "--runtime", "torch-cpu", "-q", "--no-memory")
    assert code == 0, err
    row = json.loads((bench_copy / "bench.json").read_text())["results"][0]
    assert row["mode"] == "per-image" and row["batch"] == 1 and row["images"] == 20
