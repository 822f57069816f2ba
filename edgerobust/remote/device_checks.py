"""Device checks the pytest plugin runs (pytest_plugin.py): parity, latency budget, replay accuracy, on a real device.

Not collected by name; the plugin adds this file when --edge-host is given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgerobust.config import DeviceConfig
from edgerobust.devices import load_profile
from edgerobust.export.bundle import read_manifest, verify_bundle
from edgerobust.remote.api import choose_runtime, host_accuracy, is_emulated
from edgerobust.remote.options import device_session


@pytest.fixture(scope="module")
def edge(request):
    option = request.config.getoption
    profile = load_profile(option("--edge-target"))
    bundle = Path(option("--edge-bundle"))
    manifest = read_manifest(bundle)
    assert manifest.get("target") == profile.name, f"bundle {bundle} is for {manifest.get('target')}"
    verify_bundle(bundle)
    session = device_session(DeviceConfig(host=option("--edge-host"), python=option("--edge-python"),
                                          root=option("--edge-device-dir"), ssh_config=option("--edge-ssh-config")))
    session.connect(bundle)
    runtime = choose_runtime(session, profile, None)
    precisions = [p for p in profile.precisions if p in manifest.get("models", {})]
    yield {"profile": profile, "bundle": bundle, "manifest": manifest, "session": session, "runtime": runtime,
           "precisions": precisions, "option": option, "emulated": is_emulated(session.info())}
    close = getattr(session.transport, "close", None)
    if close:
        close()


def test_parity_on_the_device(edge):
    result = edge["session"].call("verify", "--runtime", edge["runtime"])
    assert result["sha256"] == "ok"
    onnx_models = {p for p, entry in edge["manifest"]["models"].items() if entry.get("file")}
    assert set(result["golden"]) == onnx_models
    for precision, figures in result["golden"].items():
        assert figures["ok"], f"{precision}: {figures}"


def latency_budgets(option_ms: float | None, profile) -> dict[int, float]:
    """{batch: p50 budget in ms}: --edge-latency-ms (batch 1) replaces the profile's `latency_budget_ms`."""
    return {1: float(option_ms)} if option_ms else dict(profile.latency_budget_ms)


def test_latency_within_budget(edge):
    if edge["emulated"]:
        pytest.skip("the device runs under emulation (qemu-user): its timings are not latencies")
    budgets = latency_budgets(edge["option"]("--edge-latency-ms"), edge["profile"])
    assert budgets, "no latency budget: pass --edge-latency-ms or set latency_budget_ms in the device profile"
    timing = DeviceConfig()  # the device defaults of every device bench
    for precision in edge["precisions"]:
        for batch, budget in budgets.items():
            row = edge["session"].call("bench", "--precision", precision, "--runtime", edge["runtime"], "--batch",
                                       str(batch), "--warmup", str(timing.warmup), "--repeats", str(timing.repeats))
            assert row["compute"]["p50_ms"] <= budget, \
                f"{precision} batch {batch}: p50 {row['compute']['p50_ms']:.3g} ms > {budget:g} ms"


def test_replay_accuracy_matches_the_host(edge):
    bundle, max_gap = edge["bundle"], edge["option"]("--edge-max-gap")
    host = {"clean": host_accuracy(bundle)}
    for key, entry in (edge["manifest"].get("replay") or {}).items():
        with np.load(bundle / entry["file"], allow_pickle=False) as data:
            if "robust" in data.files:
                host[key] = float(np.asarray(data["robust"], dtype=bool).mean())
    for precision in edge["precisions"]:
        result = edge["session"].call("replay", "--precision", precision, "--runtime", edge["runtime"],
                                      "--no-points")
        for key, figures in result["sets"].items():
            if key in host:
                gap = host[key] - figures["accuracy"]
                assert abs(gap) <= max_gap, f"{precision} {key}: host {host[key]:.3f} vs device " \
                                            f"{figures['accuracy']:.3f} (gap {gap:+.3f} > {max_gap})"
