"""The remote harness's own cost per device run, and whether the runner's timings agree with local `bench`.

Figures (local transport = the runner in a subprocess; SSH = a loopback OpenSSH server with one shared connection):
- per phase of a device run: connect (probe: the Python's version and what the device already holds), copy (runner
  and bundle), start (the runner's no-op `ping`: interpreter and runner start, answer fetched and parsed) and a bare
  shell round trip; first run on an empty device, then the same bundle again, which must copy nothing (bytes_sent 0);
- agreement: p50 of the runner's `bench` (ort-cpu, 1 thread, batch 1, compute timing) against local
  `edgerobust bench` on the same bundle, same runtime, threads and batch; they agree when |Δp50| is within the sum of
  both spreads (p90 − p50).
Run: python -m benchmarks.harness_overhead [--rounds 5] [--repeats 300]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import save_result
from edgerobust.bench import bench_run
from edgerobust.config import BenchConfig, DeviceConfig, ExportConfig
from edgerobust.export.api import export_run
from edgerobust.remote.api import device_bench
from edgerobust.remote.options import device_session
from edgerobust.remote.testbed import LoopbackSSHD
from edgerobust.training import TrainConfig
from edgerobust.training.api import train_model


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def one_device_run(options: DeviceConfig, bundle: Path) -> dict:
    """Phases of one device run with a new session (as a new `edgerobust bench --host` process would have)."""
    session = device_session(options)
    seconds, transfer = timed(lambda: session.connect(bundle, verify=False))
    start, _ = timed(lambda: session.call("ping"))
    round_trip, _ = timed(lambda: session.run("exit 0"))
    close = getattr(session.transport, "close", None)
    if close:
        close()
    phases = transfer.to_dict()
    return {"connect_s": phases["seconds"]["connect"],
            "copy_s": phases["seconds"].get("runner", 0.0) + phases["seconds"].get("bundle", 0.0),
            "start_s": start, "round_trip_s": round_trip, "total_s": seconds + start,
            "bytes_sent": phases["bytes_sent"], "runner_copied": phases["runner_copied"],
            "bundle_copied": phases["bundle_copied"]}


def transport_figures(make_options, bundle: Path, rounds: int) -> dict:
    first, again = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as root:
            options = make_options(root)
            first.append(one_device_run(options, bundle))
            again.append(one_device_run(options, bundle))
    median = {k: statistics.median(r[k] for r in first) for k in ("connect_s", "copy_s", "start_s",
                                                                    "round_trip_s", "total_s")}
    median_again = {k: statistics.median(r[k] for r in again) for k in median}
    assert all(r["bytes_sent"] == 0 and not r["bundle_copied"] for r in again), "second run copied something"
    return {"first_run_median": median, "second_run_median": median_again, "first_runs": first,
            "second_runs": again, "bytes_first_run": first[0]["bytes_sent"], "second_run_copies": 0}


def agreement(run, repeats: int, python: str) -> dict:
    local = bench_run(run, BenchConfig(target="x86-cpu", runtimes=["ort-cpu"], batches=[1], repeats=repeats,
                      warmup=20, threads=1, memory=False), progress=False, write=False)["results"][0]
    with tempfile.TemporaryDirectory() as root:
        doc = device_bench(run, DeviceConfig(host=f"local:{python}", root=root, target="x86-cpu", precisions=["fp32"],
                                             batches=[1], threads=1, warmup=20, repeats=repeats, max_cv=1e9,
                                             name="agreement"), progress=False)
    remote = doc["rows"][0]["compute"]
    spread = (local["p90_ms"] - local["p50_ms"]) + (remote["p90_ms"] - remote["p50_ms"])
    delta = remote["p50_ms"] - local["p50_ms"]
    return {"local_bench": {k: local[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")},
            "runner_bench": {k: remote[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cv")},
            "delta_p50_ms": delta, "spread_ms": spread, "agree": abs(delta) <= spread,
            "settings": {"runtime": "ort-cpu", "threads": 1, "batch": 1, "repeats": repeats, "warmup": 20}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--python", default=sys.executable, help="the device-side interpreter")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        run = train_model(work / "run", "scnn2:8-16", "digits", TrainConfig(epochs=1, batch_size=64, augment=False),
                          progress=False)
        bundle = export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=32), progress=False).bundle
        settings = {**vars(args), "python": Path(args.python).name}  # no machine path in the results
        result = {"settings": settings, "model": "scnn2:8-16 (digits)", "bundle_bytes":
                  sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())}
        result["local"] = transport_figures(lambda root: DeviceConfig(host=f"local:{args.python}", root=root), bundle,
                                            args.rounds)
        with LoopbackSSHD(work / "sshd") as bed:
            result["ssh"] = transport_figures(
                lambda root: DeviceConfig(host=bed.alias, python=args.python, root=root, ssh_config=str(bed.config)),
                bundle, args.rounds)
        result["agreement"] = agreement(run, args.repeats, args.python)
    for name in ("local", "ssh"):
        first, again = result[name]["first_run_median"], result[name]["second_run_median"]
        print(f"{name}: first run {first['total_s']:.2f} s (connect {first['connect_s']:.2f}, copy "
              f"{first['copy_s']:.2f}, start {first['start_s']:.2f}); again {again['total_s']:.2f} s, no copy; "
              f"round trip {first['round_trip_s'] * 1e3:.0f} ms")
    a = result["agreement"]
    print(f"runner p50 {a['runner_bench']['p50_ms']:.4f} ms vs local bench {a['local_bench']['p50_ms']:.4f} ms "
          f"(Δ {a['delta_p50_ms']:+.4f}, spread {a['spread_ms']:.4f}): {'agree' if a['agree'] else 'DISAGREE'}")
    save_result("harness_overhead", result)
    return result


if __name__ == "__main__":
    main()
