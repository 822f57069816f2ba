"""A KAF model and a Swish model on the aarch64 test bed (issue 25): exported at opset 13 in fp32 and fp16, their
golden outputs reproduced on the device within the derived tolerance, benched and their attack sets replayed.

Emulated (qemu-user): the timings are checked for shape only. One runner start per step, so the test is one flow.
"""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from test_arm64_device import ARM64_PROFILE, QUICK, arm64_options

from edgerobust.config import ExportConfig
from edgerobust.export.api import export_run
from edgerobust.export.bundle import read_manifest
from edgerobust.models.activations import parse_activation, swap_activations
from edgerobust.remote.api import device_bench, device_health, device_replay
from edgerobust.remote.options import device_session
from edgerobust.run import RunDir

pytestmark = [pytest.mark.arm64, pytest.mark.timeout(3600)]
SWAPS = {"kaf": "kaf", "swish": "swish"}


@pytest.mark.parametrize("key", sorted(SWAPS))
def test_swapped_activation_runs_on_aarch64(key, edge_run, edge_profiles, arm64_host, tmp_path):
    (edge_profiles / "arm64-testbed.toml").write_text(ARM64_PROFILE)
    path = tmp_path / key
    shutil.copytree(edge_run.path, path, ignore=shutil.ignore_patterns("export-*", "device"))
    run = RunDir.open(path)
    model = swap_activations(run.load_model(), SWAPS[key], run.input_shape)
    run.save_model(model, {**run.manifest["model"], "activation": parse_activation(SWAPS[key])})
    run = RunDir.open(path)
    bundle = export_run(run, ExportConfig(target="arm64-testbed", calibration=0, golden=32), progress=False).bundle
    manifest = read_manifest(bundle)
    assert manifest["precisions"] == ["fp32", "fp16"]
    assert manifest["models"]["fp32"]["golden_tolerance"]["file"]  # a derived bound, not only finiteness

    options = replace(arm64_options(arm64_host, root=f".edgerobust-{key}"), target="arm64-testbed", name="arm64")
    bench = device_bench(run, replace(options, batches=[1], **QUICK))
    assert bench["complete"] and bench["device"]["info"]["machine"]["architecture"] == "aarch64"
    health = device_health(device_session(options), bundle)
    golden = health["verify"]["golden"]
    assert set(golden) == {"fp32", "fp16"} and all(g["checked"] and g["ok"] for g in golden.values()), golden
    assert golden["fp32"]["tolerance_kind"] == "derived" and golden["fp32"]["logits_beyond_bound"] == 0
    print(key, {p: (g["tolerance_kind"], g.get("max_diff_over_bound")) for p, g in golden.items()})
    replay = device_replay(run, options)
    outputs = np.load(bundle / "golden_outputs.npy")
    for row in replay["rows"]:
        clean = row["sets"]["clean"]
        assert row["machine"]["architecture"] == "aarch64" and clean["count"] == 32
        entry = manifest["models"][row["precision"]]["golden_tolerance"]
        if entry.get("file"):  # accuracy may differ from the host's only by decisions near the boundary
            tolerance = np.load(bundle / entry["file"])
            top2 = np.sort(outputs, axis=1)[:, -2:]
            near = int(((top2[:, 1] - top2[:, 0]) < 2 * tolerance.max(axis=1)).sum())
            assert abs(clean["correct"] - round(clean["host_accuracy"] * clean["count"])) <= near
