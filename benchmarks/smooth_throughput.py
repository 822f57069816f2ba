"""CERTIFY throughput against raw batched inference on the same runtime, model and batch (target ratio ≥ 0.95).

For each runtime — PyTorch eager CPU, onnxruntime CPU (host), and the device runner's onnxruntime session (in this
process, as `edgerobust_runner` runs on a device) — and the same digits model (scnn2:16-32) and CIFAR-shaped
ResNet-20 (synthetic 3×32×32 weights, untrained: only throughput is measured), in alternating rounds:
- raw: `infer` on one fixed pre-drawn batch, n/batch calls per point (what inference alone costs);
- certify: the estimation phase of CERTIFY, n noisy samples per point drawn by the protocol's generator (PCG64
  float32 on a helper thread), inferred and counted (`SessionCounter.counts` on the host; the runner's own
  `smooth` loop for the runner).
Throughput is noisy samples per second. Rounds are short and paired (raw then certify, back to back), and the
ratio is the median of the per-pair ratios, so load from other processes that drifts between rounds falls on both
halves of a pair alike. CPU seconds per sample (this process, all threads) are recorded beside: certify's extra CPU
is the noise generation, which overlaps inference only while a core is free. `--sound` adds the host runtimes with
the sound noise (smoothing/sound.py) on the digits model.

Where the overhead goes (`profile`, per model, CPU µs per sample on this thread, measured one after another in one
process): inference of a pre-drawn batch, drawing the protocol's noise alone (and the sound noise's), the votes
(argmax + bincount of a batch's logits). Without a free core certify's CPU is their sum, so
`bound_without_free_core` = inference / (inference + noise + votes) is the ratio to expect on a loaded machine;
with a free core the helper thread hides the noise and the ratio approaches 1. The load average is recorded before
every pair; `cpu_ratio` (raw CPU over certify CPU per sample, this process) says what certify adds whatever the
load, the wall ratio what it costs on this machine as it was.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import save_result
from edgerobust.bench.runtimes import BenchModel, get_runtime
from edgerobust.config import ExportConfig
from edgerobust.export.api import export_run
from edgerobust.run import RunDir
from edgerobust.runner import commands as runner_commands
from edgerobust.runner.noise import PHASES, noise_batches
from edgerobust.runner.runtimes import Options
from edgerobust.runner.runtimes import open_session as runner_session
from edgerobust.runner.sealed import open_bundle
from edgerobust.smoothing.counters import SessionCounter, add_votes
from edgerobust.training import TrainConfig
from edgerobust.training.api import TrainSetup, train_model

SIGMA = 0.25


def make_run(work: Path, spec: str, data: str) -> RunDir:
    return train_model(work / spec.replace(":", "-"), spec, data,
                       TrainConfig(epochs=1, batch_size=64, lr=0.05, augment=False),
                       TrainSetup(data_options={"size": 256} if data == "synthetic" else None), progress=False)


def raw_seconds(infer, x: np.ndarray, points: int, n: int, batch: int) -> float:
    fixed = next(noise_batches(x[0], SIGMA, batch, batch, 0, 0, PHASES["estimate"]))
    calls = -(-n // batch)
    started = time.perf_counter()
    for _ in range(points):
        for _ in range(calls):
            infer(fixed)
    return time.perf_counter() - started


def host_pair(runtime: str, model: BenchModel, classes: int, x: np.ndarray, points: int, n: int, batch: int,
              threads: int, noise: str = "gaussian"):
    session = get_runtime(runtime).load(model, "fp32", threads, batch)
    counter = SessionCounter(session, classes, SIGMA, 0, batch, {}, noise)

    def certify() -> float:
        started = time.perf_counter()
        counter.counts(x[:points], list(range(points)), "estimate", n)
        return time.perf_counter() - started

    return (lambda: raw_seconds(session.infer, x, points, n, batch)), certify, session.close


def runner_pair(bundle: Path, points: int, n: int, batch: int, threads: int):
    opened = open_bundle(str(bundle))
    options = Options("ort-cpu", threads, batch)
    session = runner_session(opened, "fp32", options)
    x = np.load(bundle / "golden_inputs.npy")

    args = argparse.Namespace(precision="fp32", sigma=SIGMA, n=n, batch=batch, seed=0, set_spec=None, start=0,
                              count=points, margin_below=None, phase="estimate", no_hash=True)

    def certify() -> float:
        started = time.perf_counter()
        runner_commands.smooth(opened, options, args)
        return time.perf_counter() - started

    return (lambda: raw_seconds(session.infer, x, points, n, batch)), certify, session.close


def runner_call_seconds(bundle: Path, batch: int, threads: int) -> dict:
    """What one runner `smooth` call costs besides inferring its samples (median of 5 calls of one full batch, less
    one warm batch's inference and drawing): it opens its session per call, as a device process does, and a fresh
    onnxruntime session's first run is slower than the later ones; a device call of n = 100,000 samples amortises
    both."""
    opened = open_bundle(str(bundle))
    options = Options("ort-cpu", threads, batch)
    args = argparse.Namespace(precision="fp32", sigma=SIGMA, n=batch, batch=batch, seed=0, set_spec=None, start=0,
                              count=1, margin_below=None, phase="estimate", no_hash=True)
    x = np.load(bundle / "golden_inputs.npy")
    session = runner_session(opened, "fp32", options)
    calls, warm = [], []
    for _ in range(6):
        started = time.perf_counter()
        runner_commands.smooth(opened, options, args)
        calls.append(time.perf_counter() - started)
        started = time.perf_counter()
        session.infer(next(noise_batches(x[0], SIGMA, batch, batch, 0, 0, PHASES["estimate"])))
        warm.append(time.perf_counter() - started)
    session.close()
    call, one = statistics.median(calls[1:]), statistics.median(warm[1:])
    return {"call_s": call, "warm_batch_s": one, "overhead_s": call - one}


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds on all threads) of one call."""
    cpu = time.process_time()
    wall = fn()
    return wall, time.process_time() - cpu


def measure(pair, rounds: int, samples: int) -> dict:
    raw_fn, certify_fn, close = pair
    raw_fn(), certify_fn()  # warm-up: allocator, thread pools, the generator's first call
    raw, cert, ratios, raw_cpu, cert_cpu, load = [], [], [], [], [], []
    for _ in range(rounds):  # paired back to back, so load on the machine falls on both halves alike
        load.append(os.getloadavg()[0])
        (r_wall, r_cpu), (c_wall, c_cpu) = timed(raw_fn), timed(certify_fn)
        raw.append(samples / r_wall)
        cert.append(samples / c_wall)
        ratios.append(r_wall / c_wall)
        raw_cpu.append(r_cpu / samples)
        cert_cpu.append(c_cpu / samples)
    close()
    return {"raw_samples_per_s": statistics.median(raw), "certify_samples_per_s": statistics.median(cert),
            "ratio": statistics.median(ratios), "pair_ratios": ratios, "raw_rounds": raw, "certify_rounds": cert,
            "raw_cpu_us_per_sample": 1e6 * statistics.median(raw_cpu),
            "certify_cpu_us_per_sample": 1e6 * statistics.median(cert_cpu), "load_per_pair": load,
            "cpu_ratio": statistics.median(raw_cpu) / statistics.median(cert_cpu)}


def profile(model: BenchModel, x: np.ndarray, batch: int, threads: int, samples: int) -> dict:
    """CPU µs per sample of each part of certify, one after another on this thread (median of 5 runs each)."""
    from edgerobust.smoothing.sound import sound_batches

    session = get_runtime("ort-cpu").load(model, "fp32", threads, batch)
    fixed = next(noise_batches(x[0], SIGMA, batch, batch, 0, 0, PHASES["estimate"]))
    logits = session.infer(fixed)
    votes = np.zeros(logits.shape[1], np.int64)
    calls = max(1, samples // batch)

    def cpu(fn) -> float:
        fn()
        runs = []
        for _ in range(5):
            started = time.process_time()
            fn()
            runs.append((time.process_time() - started) / (calls * batch))
        return 1e6 * statistics.median(runs)

    def infer():
        for _ in range(calls):
            session.infer(fixed)

    def draw(batches):
        return lambda: [None for _ in batches(x[0], SIGMA, calls * batch, batch, 0, 0, PHASES["estimate"])]

    def count():
        for _ in range(calls):
            add_votes(votes, logits)

    out = {"runtime": "ort-cpu", "threads": threads, "inference": cpu(infer), "noise": cpu(draw(noise_batches)),
           "sound_noise": cpu(draw(sound_batches)), "votes": cpu(count), "values_per_sample": int(x[0].size)}
    session.close()
    out["noise_ns_per_value"] = 1e3 * out["noise"] / out["values_per_sample"]
    out["bound_without_free_core"] = out["inference"] / (out["inference"] + out["noise"] + out["votes"])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--points", type=int, default=2, help="points per call (the runner opens its session once "
                        "per call, as on a device: more samples per call amortise it)")
    parser.add_argument("--n", type=int, default=32768, help="samples per point, digits model")
    parser.add_argument("--n-resnet", type=int, default=1024, help="samples per point, ResNet-20")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=max(1, torch.get_num_threads() - 1),
                        help="runtime threads, raw and certify alike (default: one core left for drawing noise)")
    parser.add_argument("--sound", action=argparse.BooleanOptionalAction, default=True,
                        help="also the sound noise on the digits model's host runtimes")
    args = parser.parse_args(argv)
    result = {"settings": {**vars(args), "sigma": SIGMA}, "models": {}, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for spec, data, n in (("scnn2:16-32", "digits", args.n), ("resnet20", "synthetic", args.n_resnet)):
            samples = args.points * n
            run = make_run(work, spec, data)
            bundle = export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=max(4, args.points),
                                                  fp16=False), progress=False).bundle
            from edgerobust.evaluation.api import test_data

            x = test_data(run, args.points).images.numpy()
            model = BenchModel(spec, run.load_model(), run.input_shape, {"fp32": bundle / "model.onnx"})
            rows = {}
            for name in ("torch-cpu", "ort-cpu"):
                rows[name] = measure(host_pair(name, model, run.num_classes, x, args.points, n, args.batch,
                                               args.threads), args.rounds, samples)
            rows["runner-ort-cpu"] = measure(runner_pair(bundle, args.points, n, args.batch, args.threads),
                                             args.rounds, samples)
            rows["runner-ort-cpu"]["per_call"] = runner_call_seconds(bundle, args.batch, args.threads)
            if args.sound and data == "digits":
                for name in ("torch-cpu", "ort-cpu"):
                    rows[f"{name} sound"] = measure(host_pair(name, model, run.num_classes, x, args.points, n,
                                                              args.batch, args.threads, "sound"), args.rounds, samples)
            result["models"][f"{spec} ({data})"] = {"n": n, **rows,
                                                     "profile": profile(model, x, args.batch, args.threads,
                                                                        min(samples, 16 * args.batch))}
            print(f"{spec:12s} profile (CPU µs/sample): {result['models'][f'{spec} ({data})']['profile']}")
            for name, r in rows.items():
                print(f"{spec:12s} {name:17s} raw {r['raw_samples_per_s']:10.0f}/s  certify "
                      f"{r['certify_samples_per_s']:10.0f}/s  ratio {r['ratio']:.3f}  CPU µs/sample "
                      f"{r['raw_cpu_us_per_sample']:.1f} → {r['certify_cpu_us_per_sample']:.1f}")
    result["load_after"] = os.getloadavg()
    ratios = [r["ratio"] for rows in result["models"].values() for name, r in rows.items()
              if isinstance(r, dict) and "ratio" in r and not name.endswith("sound")]  # the protocol's noise
    result["lowest_ratio"] = min(ratios)
    result["target"] = 0.95
    result["met"] = min(ratios) >= 0.95
    save_result("smooth_throughput", result)
    return result


if __name__ == "__main__":
    main()
