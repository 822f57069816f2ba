"""The pytest plugin's device checks (parity, latency budget, replay accuracy) against the loopback test bed."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from edgerobust.devices import load_profile
from edgerobust.remote.api import resolve_bundle

pytestmark = pytest.mark.ssh


def run_plugin(tmp_path, *args, devices=None):
    installed = any(e.value == "edgerobust.remote.pytest_plugin" for e in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "edgerobust.remote.pytest_plugin"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    if devices is not None:  # another directory of device profiles
        env["EDGEROBUST_DEVICES"] = str(devices)
    return subprocess.run([sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", "-q", "-o",
                           "addopts=", "--rootdir", str(tmp_path), *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_device_checks_pass_on_the_loopback_bed_and_fail_over_budget(edge_run, device_python, ssh_bed, tmp_path):
    bundle = resolve_bundle(edge_run, load_profile("x86-edge"))
    common = ["--edge-host", ssh_bed.alias, "--edge-ssh-config", ssh_bed.config, "--edge-trust-ssh-config",
              "--edge-python", device_python,
              "--edge-target", "x86-edge", "--edge-bundle", bundle, "--edge-device-dir", tmp_path / "device"]
    done = run_plugin(tmp_path, *common, "--edge-latency-ms", "1000")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
    done = run_plugin(tmp_path, *common, "--edge-latency-ms", "1e-6", "-k", "latency")  # a budget nothing meets
    assert done.returncode == 1 and "1 failed" in done.stdout and "test_latency_within_budget" in done.stdout


def test_the_profile_latency_budget_per_batch_and_the_option_that_replaces_it(edge_run, device_python, ssh_bed,
                                                                               tmp_path):
    from remote_testbed import EDGE_PROFILE

    bundle = resolve_bundle(edge_run, load_profile("x86-edge"))
    common = ["--edge-host", ssh_bed.alias, "--edge-ssh-config", ssh_bed.config, "--edge-trust-ssh-config",
              "--edge-python", device_python,
              "--edge-target", "x86-edge", "--edge-bundle", bundle, "--edge-device-dir", tmp_path / "device",
              "-k", "latency"]
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "x86-edge.toml").write_text(EDGE_PROFILE + '[latency_budget_ms]\n"1" = 1000\n"4" = 4000\n')
    done = run_plugin(tmp_path, *common, devices=devices)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]
    (devices / "x86-edge.toml").write_text(EDGE_PROFILE + '[latency_budget_ms]\n"1" = 1000\n"4" = 1e-6\n')
    done = run_plugin(tmp_path, *common, devices=devices)
    assert done.returncode == 1 and "fp32 batch 4: p50" in done.stdout, done.stdout[-3000:]
    done = run_plugin(tmp_path, *common, "--edge-latency-ms", "1000", devices=devices)  # the option replaces them
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]
    (devices / "x86-edge.toml").write_text(EDGE_PROFILE)  # no budget anywhere: a clear failure, not a pass
    done = run_plugin(tmp_path, *common, devices=devices)
    assert done.returncode == 1 and "no latency budget" in done.stdout, done.stdout[-3000:]


def test_plugin_needs_target_and_bundle(tmp_path):
    done = run_plugin(tmp_path, "--edge-host", "local")
    assert done.returncode != 0 and "--edge-host needs --edge-target" in done.stderr


def test_an_ssh_config_that_runs_commands_is_refused_unless_trusted(edge_run, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host nano\n  ProxyCommand sh -c 'touch pwned; nc %h %p'\n")
    bundle = resolve_bundle(edge_run, load_profile("x86-edge"))
    done = run_plugin(tmp_path, "--edge-host", "nano", "--edge-ssh-config", config, "--edge-target", "x86-edge",
                      "--edge-bundle", bundle)
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]  # pytest's usage error
    assert "line 2: ProxyCommand sh -c 'touch pwned; nc %h %p' (runs a local command)" in done.stderr
    assert "--edge-trust-ssh-config" in done.stderr and not (tmp_path / "pwned").exists()
