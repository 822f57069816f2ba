"""The runner, its dependencies and the protocol on the device's architecture: the aarch64 test bed as a device.

Every runner start costs ~20 s under emulation, so these tests are few and each does a whole flow. Latencies measured
here are an emulator's: they are checked for shape only, never compared or plotted.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import threading
import time
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime
import psutil
import pytest
from onnx import numpy_helper

from edgerobust.config import DeviceConfig, ExportConfig
from edgerobust.export.api import export_run
from edgerobust.export.bundle import read_manifest
from edgerobust.export.tolerance import compare_with_tolerance, forward_error_bound, smoothing_agreement
from edgerobust.io import read_json
from edgerobust.remote.api import device_bench, device_health, device_replay
from edgerobust.remote.fleet import load_fleet, run_fleet
from edgerobust.remote.options import device_session
from edgerobust.report import render_report
from edgerobust.run import RunDir

pytestmark = [pytest.mark.arm64, pytest.mark.timeout(3600)]
QUICK = {"warmup": 1, "repeats": 3, "max_cv": 1e9}  # plumbing only: emulated timings mean nothing
ARM64_PROFILE = """name = "arm64-testbed"
description = "the aarch64 test bed: Debian arm64 under qemu-user, onnxruntime CPU (emulated: timings mean nothing)"
arch = "aarch64"
accelerator = "cpu"
runtimes = ["ort-cpu"]
precisions = ["fp32", "fp16"]
max_opset = 13
memory_budget = "2 GiB"
python = "3.6"
threads = 1
"""


@pytest.fixture(scope="session")
def arm64_run(edge_run, edge_profiles, tmp_path_factory):
    """The remote tests' digits run (with its PGD set), exported for the test bed (fp32 + fp16) and x86-edge."""
    (edge_profiles / "arm64-testbed.toml").write_text(ARM64_PROFILE)
    path = tmp_path_factory.mktemp("arm64") / "run"
    shutil.copytree(edge_run.path, path, ignore=shutil.ignore_patterns("export-*", "device"))
    run = RunDir.open(path)
    export_run(run, ExportConfig(target="arm64-testbed", calibration=0, golden=32), progress=False)
    export_run(run, ExportConfig(target="x86-edge", fp16=True, calibration=0, golden=32), progress=False)
    return RunDir.open(path)


def arm64_options(host, root=".edgerobust-test", **kw) -> DeviceConfig:
    return DeviceConfig(host=host.alias, python="python3", root=root, ssh_config=str(host.ssh_config), timeout=1800,
                        connect_timeout=120, **kw)


def test_runner_on_aarch64_info_verify_bench_replay(arm64_run, arm64_host):
    options = arm64_options(arm64_host)
    bench = device_bench(arm64_run, replace(options, target="arm64-testbed", batches=[1], name="arm64", **QUICK))
    info = bench["device"]["info"]
    assert info["machine"]["architecture"] == "aarch64"  # as the device itself reports it
    assert info["emulation"]["emulated"] is True and bench["emulated"] is True  # qemu-user: not latencies
    assert all(row["emulated"] and row["record"]["emulated"] and len(row["attempts"]) == 1 for row in bench["rows"])
    assert info["packages"]["onnxruntime"] == onnxruntime.__version__ and info["providers"]
    assert bench["complete"] and [r["record"]["precision"] for r in bench["rows"]] == ["fp32", "fp16"]
    for row in bench["rows"]:
        assert row["record"]["architecture"] == "aarch64" and row["record"]["runtime"]["name"] == "ort-cpu"
        stats = row["compute"]
        assert stats["n"] == 3 and stats["min_ms"] <= stats["p50_ms"] <= stats["max_ms"]  # shape only: emulated

    session = device_session(options)
    health = device_health(session, arm64_run.path / "export-arm64-testbed")
    assert not health["transfer"]["bundle_copied"] and not health["transfer"]["runner_copied"]  # kept from bench
    golden = health["verify"]["golden"]
    assert set(golden) == {"fp32", "fp16"} and all(g["checked"] for g in golden.values())
    assert all(g["artifact"]["precision"] == p for p, g in golden.items())

    # Smoothing votes of the device's fp16 arithmetic: certain where the host's bound says so, the rest recounted.
    inputs = np.load(arm64_run.path / "export-arm64-testbed" / "golden_inputs.npy")
    smooth = session.call("smooth", "--sigma", "0.25", "--n", "64", "--count", "2", "--precision", "fp16")
    assert smooth["machine"]["architecture"] == "aarch64" and len(smooth["points"]) == 2
    proto = onnx.load(arm64_run.path / "export-arm64-testbed" / "model.onnx")
    for point in smooth["points"]:
        agreement = smoothing_agreement(proto, inputs[point["row"]], point["row"], 0.25, 64, 0, point["counts"],
                                        "fp16")
        assert agreement["passed"], agreement
        assert agreement["disagreeing"] <= agreement["near_boundary"]

    replay = device_replay(arm64_run, replace(options, target="arm64-testbed", name="arm64"))
    bundle = arm64_run.path / "export-arm64-testbed"
    outputs = np.load(bundle / "golden_outputs.npy")
    for row in replay["rows"]:
        assert row["machine"]["architecture"] == "aarch64"
        clean = row["sets"]["clean"]
        assert clean["count"] == 32 and set(row["sets"]) == {"clean", "pgd-0.1"}
        # Accuracy may differ from the host's only by decisions near the boundary (the derived tolerance's rule).
        tolerance = np.load(bundle / read_manifest(bundle)["models"][row["precision"]]["golden_tolerance"]["file"])
        top2 = np.sort(outputs, axis=1)[:, -2:]
        near = int(((top2[:, 1] - top2[:, 0]) < 2 * tolerance.max(axis=1)).sum())
        assert abs(clean["correct"] - round(clean["host_accuracy"] * clean["count"])) <= near


def run_on_device(host, files: dict[str, bytes], script: str) -> dict:
    """Send `files` and `script` to a fresh directory on the device and run the script with its python3 (one start)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in {**files, "script.py": script.encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    command = "d=$(mktemp -d) && cd $d && tar -x && python3 script.py; s=$?; rm -rf $d; exit $s"
    proc = subprocess.run(["ssh", "-F", str(host.ssh_config), host.alias, command], input=archive.getvalue(),
                          capture_output=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


DEVICE_SCRIPT = """
import json, platform, numpy as np, onnxruntime as ort
x = np.load("golden_inputs.npy")
out = {"machine": platform.machine(), "onnxruntime": ort.__version__}
for name in ("model.onnx", "model.fp16.onnx", "perturbed.onnx"):
    options = ort.SessionOptions(); options.intra_op_num_threads = 1
    session = ort.InferenceSession(name, options, providers=["CPUExecutionProvider"])
    out[name] = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64).tolist()
print(json.dumps(out))
"""


def test_derived_tolerance_holds_on_aarch64_and_catches_a_different_artifact(arm64_run, arm64_host):
    bundle = arm64_run.path / "export-arm64-testbed"
    manifest = read_manifest(bundle)
    tolerance = {p: np.load(bundle / e["golden_tolerance"]["file"]) for p, e in manifest["models"].items()}
    # A different artifact: the last layer's bias of class 0 shifted by 4x the largest fp32 bound.
    proto = onnx.load(bundle / "model.onnx")
    gemm = [n for n in proto.graph.node if n.op_type == "Gemm"][-1]
    init = next(i for i in proto.graph.initializer if i.name == gemm.input[2])
    bias = numpy_helper.to_array(init).copy()
    bias[0] += np.float32(4 * tolerance["fp32"].max())
    init.CopyFrom(numpy_helper.from_array(bias, init.name))
    files = {name: (bundle / name).read_bytes() for name in ("model.onnx", "model.fp16.onnx", "golden_inputs.npy")}
    files["perturbed.onnx"] = proto.SerializeToString()
    got = run_on_device(arm64_host, files, DEVICE_SCRIPT)
    assert got["machine"] == "aarch64" and got["onnxruntime"] == onnxruntime.__version__
    golden = np.load(bundle / "golden_outputs.npy")
    fp32 = compare_with_tolerance(np.array(got["model.onnx"]), golden, tolerance["fp32"])
    fp16 = compare_with_tolerance(np.array(got["model.fp16.onnx"]), golden, tolerance["fp16"])
    assert fp32["passed"] and fp16["passed"], (fp32, fp16)
    perturbed = compare_with_tolerance(np.array(got["perturbed.onnx"]), golden, tolerance["fp32"])
    assert not perturbed["passed"] and perturbed["logits_beyond_bound"] >= len(golden)  # every input's class 0
    # The device's own fp16 arithmetic stays within its own (fp16) forward error bound of the exact outputs.
    from edgerobust.export.tolerance import exact_outputs

    proto32 = onnx.load(bundle / "model.onnx")
    inputs = np.load(bundle / "golden_inputs.npy")
    exact = exact_outputs(proto32, inputs)
    assert np.all(np.abs(np.array(got["model.fp16.onnx"]) - exact) <= forward_error_bound(proto32, inputs, "fp16"))
    assert np.all(np.abs(np.array(got["model.onnx"]) - exact) <= forward_error_bound(proto32, inputs, "fp32"))


def stop_when_benching(host_stop, stop: threading.Event):
    """Stop the aarch64 server once an emulated runner there is inside `bench` (its qemu command line says so)."""
    while not stop.is_set():
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if cmdline and "binfmt" in cmdline[0] and "bench" in cmdline and "--repeats" in cmdline:
                host_stop()
                return
        time.sleep(0.05)


def test_fleet_of_x86_and_aarch64_in_one_table_with_one_stopped_mid_run(arm64_run, arm64_testbed, ssh_bed,
                                                                       device_python, tmp_path):
    from arm64_testbed import last_line, run_testbed

    state = tmp_path / "arm64-own"
    started = run_testbed("start", str(state), timeout=900)
    assert started.returncode == 0, last_line(started)
    own = json.loads(started.stdout.strip().splitlines()[-1])
    config = tmp_path / "ssh_config"  # both servers' client settings in one file, as a fleet has
    # ssh takes each setting's first value: the aarch64 host's block goes before the loopback bed's `Host *`.
    config.write_text((state / "ssh_config").read_text() + "\n" + ssh_bed.config.read_text())
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(f"""
[fleet]
concurrency = 2
[defaults]
timeout = 1800
connect_timeout = 120
[[device]]
name = "x86"
host = "{ssh_bed.alias}"
target = "x86-edge"
python = "{device_python}"
root = "{tmp_path / 'x86'}"
[[device]]
name = "aarch64"
host = "{own['alias']}"
target = "arm64-testbed"
python = "python3"
root = ".edgerobust-fleet"
""")
    stop = threading.Event()
    stopper = threading.Thread(target=stop_when_benching,
                               args=(lambda: run_testbed("stop", str(state), timeout=120), stop))
    stopper.start()
    try:
        fleet = load_fleet(fleet_file, DeviceConfig(ssh_config=str(config), batches=[1], precisions=["fp32"], warmup=1,
                                                    repeats=200, max_cv=1e9))
        rows = run_fleet(arm64_run, fleet, "bench")
    finally:
        stop.set()
        stopper.join()
        if (state / "sshd.pid").exists():
            run_testbed("stop", str(state), timeout=120)
    by_name = {r["device"]: r for r in rows}
    assert by_name["x86"]["status"] == "ok"
    assert by_name["aarch64"]["status"] == "error"
    assert by_name["aarch64"]["error"]["kind"] in {"connection-dropped", "unreachable"}
    assert read_json(arm64_run.path / "device" / "x86" / "bench.json")["complete"]
    report = render_report(arm64_run).read_text()
    assert "| x86 | scnn2:8-16 | fp32 |" in report and "| aarch64 |" in report


def test_smoothing_on_aarch64_agrees_with_the_host(arm64_run, arm64_host, tmp_path):
    """`smooth_run` through the test bed: the device draws the protocol's noise and counts fp16 votes; the host
    counts the same samples on the same artifact; they agree under the rules of smoothing/agreement.py."""
    from edgerobust.smoothing import SMOOTHING_FILE, smooth_run

    run = tmp_path / "run"
    shutil.copytree(arm64_run.path, run)
    bundle = run / "export-arm64-testbed"
    settings = {"sigma": 0.25, "n0": 8, "n": 64, "points": 2, "batch": 32, "precision": "fp16"}
    (host,) = smooth_run(run, progress=False, runtime="ort-cpu", artifact=bundle, **settings)
    (device,) = smooth_run(run, progress=False, device=arm64_options(arm64_host, target="arm64-testbed"),
                           **settings)
    assert device["record"]["architecture"] == "aarch64"
    assert device["record"]["artifact_sha256"] == host["record"]["artifact_sha256"]
    assert all(p["same_stream_as_host"] for p in device["points"])  # the bed's numpy drew the host's numbers
    (agreement,) = read_json(run / SMOOTHING_FILE)["agreement"][device["key"]]
    assert agreement["same_seed"] and agreement["passed"], agreement
    for row in agreement["rows"]:  # differing votes reported, within the samples near the boundary
        assert row["exact"]["passed"] and row["exact"]["disagreeing"] <= row["exact"]["near_boundary"]


def test_sound_smoothing_on_aarch64_agrees_with_the_host(arm64_run, arm64_host, tmp_path):
    """`--noise sound` through the test bed (Voráček & Hein): the aarch64 runner samples the rounded Gaussian against
    the host's thresholds and draws the host's samples; at the same seed the differing votes are reported and judged
    by the exact float64 bracket of those sound samples, at another seed by the two-sided test; the device
    certificates give up the same slack as the host's, and PREDICT tests at α − n·p_slack."""
    from edgerobust.smoothing import SMOOTHING_FILE, smooth_run

    run = tmp_path / "run"
    shutil.copytree(arm64_run.path, run)
    bundle = run / "export-arm64-testbed"
    settings = {"sigma": 0.25, "n0": 8, "n": 64, "points": 2, "batch": 32, "precision": "fp32", "noise": "sound",
                "predict": True}
    (host,) = smooth_run(run, progress=False, runtime="ort-cpu", artifact=bundle, **settings)
    options = arm64_options(arm64_host, target="arm64-testbed")
    (device,) = smooth_run(run, progress=False, device=options, **settings)
    (other,) = smooth_run(run, progress=False, device=options, seed=1, **settings)
    assert device["record"]["architecture"] == "aarch64" and "sound" in device["record"]["noise"]
    assert all(p["same_stream_as_host"] for p in device["points"])  # the bed drew the host's sound samples
    for h, d in zip(host["points"], device["points"], strict=True):
        assert (h["p_slack"], h["radius_slack"], h["predict_level"]) == \
            (d["p_slack"], d["radius_slack"], d["predict_level"])
    document = read_json(run / SMOOTHING_FILE)
    (agreement,) = document["agreement"][device["key"]]
    assert agreement["host"] == host["key"] and agreement["same_seed"] and agreement["passed"], agreement
    for row in agreement["rows"]:  # differing votes reported, within the sound samples near the boundary
        assert row["rule"] == "same samples" and row["exact"]["passed"]
        assert row["differing_at_least"]["estimate"] <= row["exact"]["near_boundary"]
    (independent,) = document["agreement"][other["key"]]
    assert not independent["same_seed"] and independent["passed"]
    assert all(r["rule"] == "two-sided Fisher test" for r in independent["rows"])


def test_certified_balls_hold_on_aarch64_outputs(arm64_run, arm64_host, tmp_path):
    """The device's own fp32 and fp16 outputs inside certified balls (issue 22 "No violations", on the aarch64 test
    bed; a few hundred points per ball: every runner start costs ~20 s under emulation)."""
    from edgerobust.certify.api import certify_bundle
    from edgerobust.remote.certify_check import device_certify_check

    run_path = tmp_path / "run"
    shutil.copytree(arm64_run.path, run_path, ignore=shutil.ignore_patterns("device"))
    run = RunDir.open(run_path)
    certify_bundle(run.bundle("arm64-testbed"), [0.01], method="crown", n=4, radius=False, run=run)
    out = device_certify_check(run, replace(arm64_options(arm64_host), target="arm64-testbed", name="arm64"),
                               samples=300, progress=False)
    print("arm64 certify check:", [(r["precision"], r["arithmetic"], r["certified_points"], r["violations"],
                                    r["margin_violations"], r["interval_violations"], r["violating_points"])
                                   for r in out["rows"]])
    assert out["complete"] and out["rows"] and any(r["certified_points"] for r in out["rows"])
    assert all(r["logit_intervals"] for r in out["rows"])  # each logit checked against its interval too
    for row in out["rows"]:
        assert row["record"]["architecture"] == "aarch64" and row["machine"]["architecture"] == "aarch64"
    assert out["violations"] == 0, [(r["precision"], r["arithmetic"], r["violating_points"]) for r in out["rows"]]
