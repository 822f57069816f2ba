"""The whole device flow against real transports (a subprocess and a loopback OpenSSH server), a torch-free device
Python, and every failure the harness promises to name: no mocks of SSH or of the runner."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
from cli_helpers import run_cli
from remote_testbed import make_venv_with

from edgerobust.config import DeviceConfig, ExportConfig
from edgerobust.devices import load_profile
from edgerobust.errors import EdgeRobustError
from edgerobust.export.bundle import BundleError
from edgerobust.io import read_json, sha256_file
from edgerobust.remote.api import device_bench, device_health, device_replay, resolve_bundle
from edgerobust.remote.errors import (
    BundleRejectedError,
    ConnectionDroppedError,
    HostKeyChangedError,
    PythonMissingError,
    PythonTooOldError,
    RemoteTimeoutError,
    RunnerCrashedError,
    RuntimeMissingError,
    UnknownHostError,
)
from edgerobust.remote.fleet import FleetError, load_fleet, run_fleet
from edgerobust.remote.options import device_session
from edgerobust.report import render_report

pytestmark = pytest.mark.ssh
QUICK = {"warmup": 2, "repeats": 10, "max_cv": 1e9}  # no re-measuring: these tests check plumbing


def local(python, root) -> DeviceConfig:
    return DeviceConfig(host=f"local:{python}", root=str(root))


def over_ssh(bed, python, root=".edgerobust-test", **kw) -> DeviceConfig:
    return DeviceConfig(host=bed.alias, python=str(python), root=root, ssh_config=str(bed.config), **kw)


def check_bench(run, doc, name, precisions, batches, threads=1):
    assert doc["complete"] and doc["error"] is None
    rows = doc["rows"]
    assert [(r["record"]["precision"], r["record"]["batch"]) for r in rows] == \
        [(p, b) for p in precisions for b in batches]
    for row in rows:
        rec = row["record"]
        assert rec["runtime"]["name"] == "ort-cpu" and rec["runtime"]["version"]
        assert (rec["warmup"], rec["repeats"], rec["threads"]) == (2, 10, threads)
        assert rec["spread"]["p50_ms"] == row["compute"]["p50_ms"] and rec["spread"]["cv"] == row["compute"]["cv"]
        assert rec["architecture"] == "x86_64" and rec["software"]["numpy"]
        stats = row["compute"]
        assert stats["n"] == 10 and stats["min_ms"] <= stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        assert row["artifact"]["precision"] == rec["precision"] and row["settled"] and len(row["attempts"]) == 1
    on_disk = read_json(run.path / "device" / name / "bench.json")
    assert on_disk["rows"] == rows
    section = read_json(run.path / "model.json")["device"][name]["bench"]
    assert section["complete"] and section["rows"] == len(rows)


def check_replay(run, doc, name):
    assert [r["precision"] for r in doc["rows"]] == ["fp32", "fp16"]
    with np.load(run.path / "adversarial" / "pgd-0.1.npz") as data:
        host_pgd = float(data["robust"].mean())
    for row in doc["rows"]:
        sets = row["sets"]
        assert set(sets) == {"clean", "pgd-0.1"}
        assert sets["pgd-0.1"]["count"] == 40 and sets["clean"]["count"] == 32
        assert sets["pgd-0.1"]["host_accuracy"] == host_pgd
        for figures in sets.values():
            assert figures["gap"] == figures["host_accuracy"] - figures["accuracy"]
            assert figures["accuracy"] == figures["correct"] / figures["count"]
    assert read_json(run.path / "device" / name / "replay.json")["rows"] == doc["rows"]


def test_local_flow_bench_replay_and_no_second_copy(edge_copy, device_python, tmp_path):
    options = local(device_python, tmp_path / "device")
    doc = device_bench(edge_copy, replace(options, target="x86-edge", batches=[1, 4], name="here", threads=0, **QUICK))
    check_bench(edge_copy, doc, "here", ["fp32", "fp16"], [1, 4], threads=0)  # 0: the runtime's own default
    assert doc["device"]["info"]["machine"]["python_executable"] == str(device_python)  # the torch-free one
    transfer = doc["device"]["transfer"]
    assert transfer["runner_copied"] and transfer["bundle_copied"] and transfer["bytes_sent"] > 0
    replay = device_replay(edge_copy, replace(options, target="x86-edge", name="here"))
    check_replay(edge_copy, replay, "here")
    assert not replay["device"]["transfer"]["bundle_copied"] and not replay["device"]["transfer"]["runner_copied"]
    report = render_report(edge_copy).read_text()
    assert "## On the device" in report and "| here | scnn2:8-16 | fp16 | 4 | ort-cpu | runtime default |" in report
    assert (edge_copy.path / "figures" / "device_latency.png").is_file()


def test_ssh_flow_and_cli(edge_copy, device_python, ssh_bed, tmp_path):
    options = over_ssh(ssh_bed, device_python, root=str(tmp_path / "ssh-device"))
    doc = device_bench(edge_copy, replace(options, target="x86-edge", precisions=["fp16"], name="edge-a", **QUICK))
    check_bench(edge_copy, doc, "edge-a", ["fp16"], [1])
    assert doc["device"]["transport"] == "ssh" and doc["device"]["host_key_checked"] is True
    assert doc["device"]["transfer"]["bundle_copied"]
    replay = device_replay(edge_copy, replace(options, target="x86-edge", name="edge-a"))
    check_replay(edge_copy, replay, "edge-a")
    assert not replay["device"]["transfer"]["bundle_copied"]
    code, out, err = run_cli("bench", str(edge_copy.path), "--target", "x86-edge", "--host", ssh_bed.alias,
                             "--ssh-config", str(ssh_bed.config), "--python", str(device_python), "--device-dir",
                        str(tmp_path / "ssh-device"), "--batch", "1", "--repeats", "5", "--warmup", "1",
                        "--max-cv", "1e9", "-q")
    assert code == 0, err
    assert "fp32" in out and "fp16" in out and "bundle no (same hash already there)" in out
    code, out, err = run_cli("evaluate", str(edge_copy.path), "--host", f"local:{device_python}", "--target",
                             "x86-edge", "--device-dir", str(tmp_path / "ssh-device"), "-q")
    assert code == 0, err
    assert "pgd-0.1" in out and "gap" in out


def test_fleet_of_two_and_a_failing_device(edge_copy, device_python, ssh_bed, tmp_path):
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(f"""
[fleet]
concurrency = 3
[defaults]
target = "x86-edge"
python = "{device_python}"
[[device]]
name = "board-ssh"
host = "{ssh_bed.alias}"
root = "{tmp_path / 'a'}"
[[device]]
name = "board-local"
host = "local"
root = "{tmp_path / 'b'}"
[[device]]
name = "board-off"
host = "{ssh_bed.user}@127.0.0.1:1"
connect_timeout = 3
""")
    fleet = load_fleet(fleet_file, DeviceConfig(ssh_config=str(ssh_bed.config), batches=[1], precisions=["fp32"],
                                                **QUICK))
    rows = run_fleet(edge_copy, fleet, "bench")
    by_name = {r["device"]: r for r in rows}
    assert by_name["board-ssh"]["status"] == by_name["board-local"]["status"] == "ok"
    assert by_name["board-ssh"]["health"]["verify"] == "ok"
    assert by_name["board-off"]["status"] == "error" and by_name["board-off"]["error"]["kind"] == "unreachable"
    for name in ("board-ssh", "board-local"):
        assert read_json(edge_copy.path / "device" / name / "bench.json")["complete"]
    assert not (edge_copy.path / "device" / "board-off").exists()
    report = render_report(edge_copy).read_text()
    assert "| board-ssh | scnn2:8-16 | fp32 |" in report and "| board-local | scnn2:8-16 | fp32 |" in report
    assert "| board-off |" in report and "unreachable" in report


def kill_when(pattern: list[str], action, stop: threading.Event):
    """Call `action(process)` on the first Python process whose command line holds every word of `pattern`."""
    while not stop.is_set():
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if cmdline and Path(cmdline[0]).name.startswith("python") and all(word in cmdline for word in pattern):
                action(process)
                return
        time.sleep(0.02)


def test_runner_killed_mid_bench_keeps_the_rows_gathered(edge_copy, device_python, tmp_path):
    stop = threading.Event()
    killer = threading.Thread(target=kill_when, args=(["bench", "--batch", "64"], lambda p: p.kill(), stop))
    killer.start()
    try:
        with pytest.raises(RunnerCrashedError, match="runner died during `bench`") as caught:
            device_bench(edge_copy, replace(local(device_python, tmp_path / "d"), target="x86-edge",
                                            precisions=["fp32"], batches=[1, 64], warmup=2, repeats=3000, max_cv=1e9,
                                            name="crash"))
    finally:
        stop.set()
        killer.join()
    saved = read_json(edge_copy.path / "device" / "crash" / "bench.json")
    assert caught.value.partial["rows"] == saved["rows"] and len(saved["rows"]) == 1
    assert not saved["complete"] and saved["error"]["kind"] == "runner-crashed"


def test_server_stopped_mid_bench_is_a_dropped_connection(edge_copy, device_python, fresh_bed, tmp_path):
    stop = threading.Event()
    stopper = threading.Thread(target=kill_when, args=(["bench", "--batch", "64"], lambda p: fresh_bed.stop(), stop))
    stopper.start()
    try:
        with pytest.raises(ConnectionDroppedError, match="dropped") as caught:
            device_bench(edge_copy, replace(over_ssh(fresh_bed, device_python, str(tmp_path / "d")),
                                            target="x86-edge", precisions=["fp32"], batches=[1, 64], warmup=2,
                                            repeats=3000, max_cv=1e9, name="dropped"))
    finally:
        stop.set()
        stopper.join()
    assert len(caught.value.partial["rows"]) == 1
    assert read_json(edge_copy.path / "device" / "dropped" / "bench.json")["error"]["kind"] == "connection-dropped"


def test_wrong_host_key_writes_nothing(edge_copy, device_python, fresh_bed, tmp_path):
    from edgerobust.remote.testbed import keygen

    fresh_bed.write_client_files(host_pub=keygen(tmp_path / "other", "other"))
    with pytest.raises(HostKeyChangedError):
        device_bench(edge_copy, replace(over_ssh(fresh_bed, device_python), target="x86-edge", **QUICK))
    assert not (edge_copy.path / "device").exists() and "device" not in read_json(edge_copy.path / "model.json")


def test_missing_runtime_and_python(edge_copy, device_python, tmp_path):
    numpy_only = make_venv_with(tmp_path / "numpy-only", ("numpy",))
    with pytest.raises(RuntimeMissingError, match="onnxruntime.*install"):
        device_bench(edge_copy, replace(local(numpy_only, tmp_path / "d"), target="x86-edge", **QUICK))
    with pytest.raises(PythonMissingError, match="no working '/nonexistent/python3'"):
        device_bench(edge_copy, replace(local("/nonexistent/python3", tmp_path / "d"), target="x86-edge", **QUICK))
    old = tmp_path / "python2"
    old.write_text("#!/bin/sh\necho 'edgerobust-probe python 2.7.18'\n")
    old.chmod(0o755)
    with pytest.raises(PythonTooOldError, match="Python 2.7.18"):
        device_bench(edge_copy, replace(local(old, tmp_path / "d"), target="x86-edge", **QUICK))
    assert not (edge_copy.path / "device").exists()


def test_target_whose_runtime_the_device_lacks(edge_copy, device_python, tmp_path):
    from edgerobust.export.api import export_run

    export_run(edge_copy, ExportConfig(target="x86-trt", calibration=0, golden=8), progress=False)
    with pytest.raises(RuntimeMissingError, match="lacks every runtime target 'x86-trt' uses"):
        device_bench(edge_copy, replace(local(device_python, tmp_path / "d"), target="x86-trt", **QUICK))
    assert not (edge_copy.path / "device").exists()


def test_bundle_failing_verification_on_the_device(edge_run, device_python, tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(resolve_bundle(edge_run, load_profile("x86-edge")), bundle)
    outputs = np.load(bundle / "golden_outputs.npy")
    np.save(bundle / "golden_outputs.npy", outputs + 10.0 * np.sign(outputs))  # golden outputs no model reproduces
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["golden_outputs.npy"]["sha256"] = sha256_file(bundle / "golden_outputs.npy")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    session = device_session(local(device_python, tmp_path / "d"))
    with pytest.raises(BundleRejectedError, match="parity_failed"):
        device_health(session, bundle)


def test_damaged_copy_on_the_device_is_replaced(edge_copy, device_python, tmp_path):
    options = local(device_python, tmp_path / "d")
    device_bench(edge_copy, replace(options, target="x86-edge", precisions=["fp32"], name="heal", **QUICK))
    copies = list((tmp_path / "d" / "bundles").iterdir())
    assert len(copies) == 1
    (copies[0] / "model.onnx").write_bytes(b"tampered")
    doc = device_bench(edge_copy, replace(options, target="x86-edge", precisions=["fp32"], name="heal", **QUICK))
    assert doc["device"]["transfer"]["bundle_copied"] and doc["complete"]


def test_bad_input_is_one_line_and_writes_nothing(edge_copy, device_python, ssh_bed, tmp_path):
    options = local(device_python, tmp_path / "d")
    with pytest.raises(EdgeRobustError, match="has no export for target 'jetson-nano'"):
        device_bench(edge_copy, replace(options, target="jetson-nano"))
    other = edge_copy.bundle("x86-cpu")
    with pytest.raises(EdgeRobustError, match="exported for target 'x86-cpu', not 'x86-edge'"):
        device_bench(edge_copy, replace(options, target="x86-edge"), bundle=other)
    with pytest.raises(UnknownHostError, match="unknown host"):
        device_bench(edge_copy, DeviceConfig(host="no-such-board.invalid", ssh_config=str(ssh_bed.config),
                                             target="x86-edge"))
    bad = tmp_path / "fleet.toml"
    bad.write_text('[[device]]\nname = "a"\nhost = "local"\nthreds = 2\n')
    with pytest.raises(FleetError, match="'threds' is not a field"):
        load_fleet(bad)
    bad.write_text('[[device]]\nname = "a"\n')
    with pytest.raises(FleetError, match="field 'host' is missing"):
        load_fleet(bad)
    assert not (tmp_path / "d").exists() and not (edge_copy.path / "device").exists()
    code, out, err = run_cli("bench", str(edge_copy.path), "--target", "jetson-nano", "--host", "local")
    assert code == 2 and err.strip().count("\n") == 0 and "has no export for target 'jetson-nano'" in err
    code, out, err = run_cli("bench", str(edge_copy.path), "--target", "x86-edge", "--hosts", str(bad))
    assert code == 2 and "field 'host' is missing" in err
    assert not (edge_copy.path / "device").exists()


def test_tampered_host_bundle_is_refused_before_any_copy(edge_run, device_python, tmp_path):
    import shutil

    from edgerobust.run import RunDir

    shutil.copytree(edge_run.path, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    bundle = tmp_path / "run" / "export-x86-edge"
    (bundle / "model.onnx").write_bytes(b"changed")
    with pytest.raises(BundleError, match="model.onnx has been modified"):
        device_bench(run, replace(local(device_python, tmp_path / "d"), target="x86-edge"), bundle=bundle)
    assert not Path(tmp_path / "d").exists()


def test_pipeline_device_step(edge_copy, device_python, tmp_path):
    from edgerobust.pipeline import PipelineContext, run_steps

    recipe = {"export": {"target": "x86-edge"}, "device": {"python": device_python, "repeats": 10, "warmup": 2,
                                                          "max_cv": 1e9}}
    ctx = run_steps(PipelineContext(tmp_path / "pipe", recipe, progress=False, run=edge_copy), ["device"])
    rows = {what: value for step, what, value in ctx.summary if step == "device"}
    assert {"local fp32 batch 1 p50 ms", "local fp16 batch 1 p50 ms"} <= set(rows)
    assert any("pgd-0.1 accuracy (gap to host)" in what for what in rows)
    assert read_json(edge_copy.path / "device" / "local" / "bench.json")["complete"]
    assert (tmp_path / "pipe" / "device-work" / "bundles").is_dir()


def test_host_options_and_the_recipe_device_section_make_one_device_config(edge_copy, device_python, tmp_path):
    """`bench --host` and `evaluate --host` read the recipe's [device]; an option given overrides its key."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[device]\npython = "{device_python}"\nroot = "{tmp_path / "work"}"\nname = "from-recipe"\n'
                      'target = "x86-edge"\nprecisions = ["fp32"]\nwarmup = 1\nrepeats = 3\nmax_cv = 1e9\n'
                      "replay_batch = 16\n")
    code, out, err = run_cli("bench", edge_copy.path, "--host", "local", "--recipe", recipe, "--repeats", "4", "-q")
    assert code == 0, err
    bench = read_json(edge_copy.path / "device" / "from-recipe" / "bench.json")
    assert bench["settings"]["warmup"] == 1 and bench["settings"]["repeats"] == 4  # the option over the recipe
    assert bench["settings"]["precisions"] == ["fp32"] and bench["target"] == "x86-edge"
    assert bench["device"]["info"]["machine"]["python_executable"] == str(device_python)
    assert (tmp_path / "work" / "bundles").is_dir()  # the recipe's root is the device's work directory
    code, out, err = run_cli("evaluate", edge_copy.path, "--host", "local", "--recipe", recipe, "--batch-size", "8",
                             "-q")
    assert code == 0, err
    replay = read_json(edge_copy.path / "device" / "from-recipe" / "replay.json")
    assert replay["settings"]["batch"] == 8 and replay["settings"]["precisions"] == ["fp32"]


def test_noisy_rows_are_remeasured_then_flagged(edge_copy, device_python, tmp_path):
    doc = device_bench(edge_copy, replace(local(device_python, tmp_path / "d"), target="x86-edge",
                                          precisions=["fp32"], warmup=2, repeats=10, max_cv=1e-12, remeasure=2,
                                          name="noisy"))
    row = doc["rows"][0]
    assert len(row["attempts"]) == 3 and not row["settled"] and row["flag"].startswith("never settled after 3 runs")
    assert all(a["why"].startswith("cv ") for a in row["attempts"])


def test_timeout_mid_bench_is_typed_and_kills_the_runner(edge_copy, device_python, tmp_path):
    options = local(device_python, tmp_path / "d")
    options.timeout = 4.0
    # copies first
    device_bench(edge_copy, replace(options, target="x86-edge", precisions=["fp32"], name="slow", **QUICK))
    with pytest.raises(RemoteTimeoutError, match="no answer within 4 s"):
        device_bench(edge_copy, replace(options, target="x86-edge", precisions=["fp32"], warmup=0, repeats=10**8,
                                        name="slow"))
    saved = read_json(edge_copy.path / "device" / "slow" / "bench.json")
    assert saved["error"]["kind"] == "timeout" and not saved["complete"]
    runner = str(tmp_path / "d")
    assert not [p for p in psutil.process_iter(["cmdline"]) if any(runner in w for w in p.info["cmdline"] or [])]


def test_fleet_retries_a_transient_failure_once(edge_copy, device_python, fresh_bed, tmp_path):
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(f'[[device]]\nname = "rebooting"\nhost = "{fresh_bed.alias}"\ntarget = "x86-edge"\n'
                          f'python = "{device_python}"\nroot = "{tmp_path / "d"}"\nconnect_timeout = 3\n')
    fresh_bed.stop()  # the board is rebooting: refused now, back in a moment
    restart = threading.Timer(0.5, fresh_bed.start)
    restart.start()
    fleet = load_fleet(fleet_file, DeviceConfig(ssh_config=str(fresh_bed.config), precisions=["fp32"], **QUICK))
    rows = run_fleet(edge_copy, fleet, "bench", retry_delay=3.0)
    restart.join()
    assert rows[0]["status"] == "ok" and rows[0]["health"]["tries"] == 2


def test_an_emulated_device_is_recorded_and_never_reported_as_a_latency(edge_copy, device_python, tmp_path,
                                                                          monkeypatch):
    import platform
    import shutil

    from edgerobust.report import devices as report_devices

    native = device_bench(edge_copy, replace(local(device_python, tmp_path / "d"), target="x86-edge",
                                             precisions=["fp32"], name="native", **QUICK))
    assert native["emulated"] is False and native["rows"][0]["emulated"] is False
    assert native["rows"][0]["record"]["emulated"] is False
    # The same machine seen as an emulated one: an enabled qemu binfmt entry for its own architecture (the runner's
    # `info` reads it through its fixture root, as in tests/fixtures/qemu-aarch64).
    root = tmp_path / "emulated-root"
    (root / "proc/sys/fs/binfmt_misc").mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "fixtures/qemu-aarch64/proc/sys/fs/binfmt_misc/qemu-aarch64",
                root / f"proc/sys/fs/binfmt_misc/qemu-{platform.machine()}")
    monkeypatch.setenv("EDGEROBUST_RUNNER_ROOT", str(root))
    doc = device_bench(edge_copy, replace(local(device_python, tmp_path / "d"), target="x86-edge",
                                          precisions=["fp32"], warmup=2, repeats=10, max_cv=1e-12, remeasure=2,
                                          name="emulated"))
    row = doc["rows"][0]
    assert doc["emulated"] is True and row["emulated"] is True and row["record"]["emulated"] is True
    assert doc["device"]["info"]["emulation"]["by"] == "qemu-user"
    assert len(row["attempts"]) == 1 and row["flag"] is None  # one run: an emulator's spread is not judged
    plotted = []

    def recording_plot(rows, path, spec):
        plotted.extend(rows)
        return original(rows, path, spec)

    original = report_devices.latency_plot
    monkeypatch.setattr(report_devices, "latency_plot", recording_plot)
    report = render_report(edge_copy).read_text()
    assert {r["device"] for r in plotted} == {"native"}
    assert "| native | scnn2:8-16 | fp32 | 1 |" in report and "| emulated | scnn2:8-16" not in report
    assert "### Emulated devices (not latencies)" in report
    assert f"| emulated | {platform.machine()} | fp32 | 1 | ort-cpu |" in report


def test_a_set_saved_after_the_export_is_matched_by_content(edge_copy, device_python, tmp_path):
    """A set the bundle does not carry goes to the device as a file; the device names it by its path there, and
    the host matches it by the file's sha256, so its host accuracy and gap appear (they were missing before)."""
    source = edge_copy.path / "adversarial" / "pgd-0.1.npz"
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files}
        host_late = float(data["robust"][:20].mean())
    np.savez(edge_copy.path / "adversarial" / "late-set.npz", **{k: v[:20] for k, v in arrays.items()})
    doc = device_replay(edge_copy, replace(local(device_python, tmp_path / "device"), target="x86-edge",
                                           precisions=["fp32"], name="here"))
    late = doc["rows"][0]["sets"]["late-set"]
    assert late["count"] == 20 and late["host_accuracy"] == host_late
    assert late["gap"] == host_late - late["accuracy"]
    assert late["sha256"] == sha256_file(edge_copy.path / "adversarial" / "late-set.npz")


def test_cli_fleet_ssh_config_is_refused_until_trusted_then_shown(edge_copy, device_python, tmp_path):
    risky = tmp_path / "their_ssh_config"
    risky.write_text("Host *\n  ProxyCommand nc %h %p\n")
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(f'[defaults]\nssh_config = "{risky}"\ntarget = "x86-edge"\npython = "{device_python}"\n'
                          f'[[device]]\nname = "board"\nhost = "local"\nroot = "{tmp_path / "d"}"\n')
    base = ("bench", str(edge_copy.path), "--hosts", str(fleet_file), "--target", "x86-edge", "--precision", "fp32",
            "--batch", "1",
            "--repeats", "10", "--warmup", "2", "--max-cv", "1e9")
    code, out, err = run_cli(*base)
    assert code == 2 and err.strip().count("\n") == 0
    assert "ProxyCommand" in err and "--trust-ssh-config" in err
    assert not (edge_copy.path / "device" / "board").exists()
    code, out, err = run_cli(*base, "--trust-ssh-config")
    assert code == 0, err
    assert "trusted ssh_config" in err and "ProxyCommand nc %h %p (runs a local command)" in err
    assert read_json(edge_copy.path / "device" / "board" / "bench.json")["complete"]
    code, out, err = run_cli("bench", str(edge_copy.path), "--host", "local", "--trust-ssh-config")
    assert code == 2 and "give --hosts" in err


def test_a_saved_set_is_shown_with_what_made_it(tmp_path):
    from edgerobust.io import write_json
    from edgerobust.report.devices import set_labels
    from edgerobust.run import RunDir

    run = RunDir.create(tmp_path / "run")
    assert set_labels(run) == {}
    write_json(run.path / "robustness.json", {"results": {
        "9a69b03e8974": {"eps": 0.1, "norm": "linf", "settings": {"suite": "standard", "attacks": []}},
        "0badc0ffee00": {"eps": 0.5, "norm": "l2", "settings": {"suite": "none", "attacks": ["pgd", "fgsm"]}}}})
    assert set_labels(run) == {"9a69b03e8974": "9a69b03e8974 (standard linf ε=0.1)",
                               "0badc0ffee00": "0badc0ffee00 (pgd+fgsm l2 ε=0.5)"}
