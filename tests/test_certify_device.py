"""Certificates checked on the device (issue 22, "No violations"): the runner's `logits` command, the points it draws
inside a ball, the boundary's checks of its document, and `certify RUN --host` through the local runner."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from cli_helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.certify.api import certify_bundle
from edgerobust.config import DeviceConfig
from edgerobust.io import read_json, write_json
from edgerobust.remote.boundary import DeviceOutputError, parse_document
from edgerobust.remote.certify_check import CertifyCheckError, device_certify_check, violations
from edgerobust.report import render_report
from edgerobust.runner.balls import ball_batches, fingerprint

pytestmark = pytest.mark.ssh
EPS = 0.01


def local(python, root) -> DeviceConfig:
    return DeviceConfig(host=f"local:{python}", root=str(root), target="x86-edge")


@pytest.fixture(params=[("inf", EPS)])
def certified(edge_copy, request):
    """edge_copy certified at ε (CROWN, 8 points) on its x86-edge bundle, with an attack set whose points sit at
    corners of those balls (L∞) or on their spheres (L2), so the attacked-points path has points to check."""
    norm, eps = request.param
    bundle = edge_copy.bundle("x86-edge")
    doc = certify_bundle(bundle, [eps], method="crown", norm=norm, n=8, radius=False, run=edge_copy)
    x = np.load(bundle / "golden_inputs.npy")[:8].astype(np.float64)
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=x.shape)
    if norm == "inf":
        corner = np.clip(x + eps * signs, np.maximum(0, x - eps), np.minimum(1, x + eps)).astype(np.float32)
        corner = np.where(np.abs(corner.astype(np.float64) - x) > eps, x.astype(np.float32), corner)
    else:
        step = eps * (1 - 1e-6) * signs / np.sqrt(signs[0].size)
        corner = np.clip(x + step, 0, 1).astype(np.float32)
        assert (np.linalg.norm((corner - x).reshape(8, -1), axis=1) <= eps).all()
    np.savez(edge_copy.path / "adversarial" / "corners.npz", x_adv=corner,
             labels=np.load(bundle / "golden_labels.npy")[:8].astype(np.int64))
    return edge_copy, doc


@pytest.mark.parametrize("certified", [("inf", EPS), ("2", 0.1)], indirect=True, ids=["linf", "l2"])
def test_no_device_output_leaves_its_bounds_at_10000_points_per_ball(certified, device_python, tmp_path):
    run, doc = certified
    fp32 = next(a for a in doc["artifacts"] if a["precision"] == "fp32")
    assert any(r["certified_accuracy"] > 0 for r in fp32["rows"] if r["arithmetic"] == "fp32")
    out = device_certify_check(run, local(device_python, tmp_path / "d"), samples=10_000, progress=False)
    assert out["complete"] and out["violations"] == 0
    rows = {(r["precision"], r["arithmetic"]): r for r in out["rows"]}
    assert ("fp32", "fp32") in rows and ("fp32", "real") not in rows  # the real model bounds no artifact
    for row in out["rows"]:
        certified_here = [i for i, ok in enumerate(next(
            r for a in doc["artifacts"] if a["precision"] == row["precision"] for r in a["rows"]
            if r["arithmetic"] == row["arithmetic"])["points"]["certified"]) if ok]
        assert [p["point"] for p in row["points"]] == certified_here
        assert row["logit_intervals"] and row["interval_violations"] == 0 and row["margin_violations"] == 0
        for point in row["points"]:
            assert point["samples"] == 10_000 and point["sampled_violations"] == 0 and point["sampled_min_slack"] >= 0
            assert point["sampled_min_interval_slack"] >= 0  # every logit inside its certified interval
            assert point["attacked"] >= 1 and point["attacked_violations"] == 0  # its corner lies in the ball
        assert row["checked_outputs"] == sum(p["samples"] + p["attacked"] for p in row["points"])
        assert row["record"]["architecture"] == "x86_64" and row["runtime"]["name"] == "ort-cpu"
    section = read_json(run.path / "model.json")["device"]
    entry = next(v["certify_check"] for v in section.values() if "certify_check" in v)
    on_disk = read_json(run.path / entry["file"])
    assert on_disk["violations"] == 0 and on_disk["rows"] == out["rows"] and entry["complete"]
    report = render_report(run.path).read_text()
    assert "## Certificates checked on the device" in report and "No device output left its certified bounds" in report


def test_a_logit_outside_its_certified_interval_is_a_violation_by_point(certified, device_python, tmp_path):
    run, _ = certified
    path = run.path / "certificates.json"
    doc = read_json(path)
    row = next(r for a in doc["artifacts"] if a["precision"] == "fp32" for r in a["rows"] if r["arithmetic"] == "fp32")
    point = row["points"]["certified"].index(True)
    label = int(np.load(run.bundle("x86-edge") / "golden_labels.npy")[point])
    row["points"]["logit_upper"][point][label] = row["points"]["logit_lower"][point][label]  # an empty-ish interval
    write_json(path, doc)
    config = replace(local(device_python, tmp_path / "d"), precisions=["fp32"])
    out = device_certify_check(run, config, samples=40, arithmetic=["fp32"], progress=False)
    (checked,) = out["rows"]
    assert checked["violating_points"] == [point] and checked["margin_violations"] == 0
    assert checked["interval_violations"] == checked["violations"] > 0
    first = next(p for p in checked["points"] if p["point"] == point)["sampled_first"]
    assert first["class"] == label and first["logit"] > first["interval"][1]
    report = render_report(run.path).read_text()
    assert "device outputs left their certified bounds" in report


def test_a_wrong_bound_is_reported_as_a_violation_by_point(certified, device_python, tmp_path):
    run, _ = certified
    path = run.path / "certificates.json"
    doc = read_json(path)
    row = next(r for a in doc["artifacts"] if a["precision"] == "fp32" for r in a["rows"] if r["arithmetic"] == "fp32")
    point = row["points"]["certified"].index(True)
    bounds = row["points"]["margin_lower"]
    bounds[point] = [None if b is None else b + 1e3 for b in bounds[point]]
    write_json(path, doc)
    config = replace(local(device_python, tmp_path / "d"), precisions=["fp32"])
    out = device_certify_check(run, config, samples=50, arithmetic=["fp32"], progress=False)
    (checked,) = out["rows"]
    assert checked["violating_points"] == [point] and out["violations"] == 50 + checked["points"][0]["attacked"]
    first = checked["points"][0]["sampled_first"]
    assert first["sample"] == 0 and first["margin"] < first["bound"]
    code, _, err = run_cli("certify", run.path, "--host", f"local:{device_python}", "--device-dir", tmp_path / "d",
                           "--check-samples", "20", "--precision", "fp32", "--arithmetic", "fp32", "--target",
                           "x86-edge")
    assert code == 2 and "left their certified bounds" in err and f"[{point}]" in err


def test_certificates_of_another_artifact_are_refused_before_connecting(certified, tmp_path):
    run, _ = certified
    doc = read_json(run.path / "certificates.json")
    doc["artifacts"][0]["sha256"] = "0" * 64
    write_json(run.path / "certificates.json", doc)
    with pytest.raises(CertifyCheckError, match="not this bundle's"):
        device_certify_check(run, local("/nonexistent/python", tmp_path / "d"), samples=10, progress=False)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31), st.one_of(st.just(0.0), st.floats(1e-3, 0.5)), st.sampled_from(["inf", "2"]),
       st.integers(0, 3))
def test_points_drawn_in_a_ball_lie_inside_it_and_the_box_exactly(seed, eps, norm, row):
    x = np.random.default_rng(seed).random((1, 4, 3)).astype(np.float32)
    points = np.concatenate(list(ball_batches(x, eps, norm, 37, 10, seed, row)))
    assert points.dtype == np.float32 and points.shape == (37, 1, 4, 3)
    diff = (points.astype(np.float64) - x.astype(np.float64)).reshape(37, -1)
    size = np.abs(diff).max(1) if norm == "inf" else np.linalg.norm(diff, axis=1)
    assert (size <= eps).all() and (points >= 0).all() and (points <= 1).all()
    again = np.concatenate(list(ball_batches(x, eps, norm, 37, 37, seed, row)))  # batching does not change the draw
    assert np.array_equal(points, again)
    assert fingerprint(x, eps, norm, seed, row) != fingerprint(x, eps, norm, seed, row + 1) or eps == 0


def test_violations_compare_margins_with_bounds_exactly():
    outputs = np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [np.nan, 0.0, 0.0]], dtype=np.float32)
    found = violations(outputs, 0, [None, 1.0, 1.0])
    assert found["violations"] == 2 and found["first"] == {"sample": 1, "class": 1, "margin": 0.0, "bound": 1.0}
    assert violations(outputs[:1], 0, [None, 1.0, 2.0])["violations"] == 0


def test_violations_compare_each_logit_with_its_interval_exactly():
    outputs = np.array([[2.0, 1.0, 0.0], [2.5, 1.0, 0.0], [2.0, 1.0, -0.5]], dtype=np.float32)
    interval = ([1.0, 0.5, -0.25], [2.0, 1.5, 0.25])  # sample 0 on the edges: inside; 1 and 2 outside
    found = violations(outputs, 0, [None, 0.5, 1.0], interval)
    assert found["violations"] == 2 and found["interval_violations"] == 2 and found["margin_violations"] == 0
    assert found["first"] == {"sample": 1, "class": 0, "logit": 2.5, "interval": [1.0, 2.0]}
    assert found["min_interval_slack"] == -0.5
    both = violations(outputs, 0, [None, 1.5, 1.0], interval)  # sample 1 breaks both: counted once
    assert both["violations"] == 3 and both["margin_violations"] == 2 and both["interval_violations"] == 2


@pytest.mark.parametrize("rows, why", [
    ([{"row": 0, "logits": [[1.0, 2.0], [1.0]]}], "not 2 rows of 2 numbers"),
    ([{"row": 0, "logits": [[1.0, "x"], [1.0, 2.0]]}], "not 2 rows"),
    ([{"row": 0, "logits": [[1.0, 2.0]]}], "not 2 rows"),
    ([{"logits": [[1.0, 2.0], [1.0, 2.0]]}], "no valid 'row'"),
])
def test_the_boundary_refuses_a_malformed_logits_document_in_one_line(rows, why):
    doc = {"protocol": 1, "ok": True, "command": "logits", "result": {"rows": rows, "samples": 2}}
    with pytest.raises(DeviceOutputError, match=why) as info:
        parse_document(json.dumps(doc).encode(), "logits", "dev")
    assert "\n" not in str(info.value)
    ok = {"protocol": 1, "ok": True, "result": {"samples": 2, "rows": [{"row": 0, "logits": [[1.0, None], [0, 2]]}]}}
    assert parse_document(json.dumps(ok).encode(), "logits", "dev")["result"]["rows"][0]["logits"][0] == [1.0, None]


def test_the_runner_logits_command_at_inputs_and_its_bad_input(runner_bundle, tmp_path):
    from runner_helpers import error_kind, run_runner

    x = np.load(runner_bundle / "golden_inputs.npy")[:3].astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    code, doc = run_runner("logits", "--bundle", runner_bundle, "--set", tmp_path / "x.npz", "--rows", "2,0")
    assert code == 0, doc
    rows = doc["result"]["rows"]
    assert [r["row"] for r in rows] == [2, 0] and all(len(r["logits"]) == 1 for r in rows)
    assert doc["result"]["artifact"]["precision"] == "fp32" and doc["result"]["samples"] is None
    code, doc = run_runner("logits", "--bundle", runner_bundle, "--set", tmp_path / "x.npz", "--rows", "1",
                           "--samples", "5", "--eps", "0.02", "--seed", "7")
    (row,) = doc["result"]["rows"]
    assert len(row["logits"]) == 5 and row["fingerprint"] == fingerprint(x[1], 0.02, "inf", 7, 1)
    np.savez(tmp_path / "y.npz", y=x)
    np.savez(tmp_path / "f64.npz", x=x.astype(np.float64))
    assert "no x (or x_adv)" in error_kind(["logits", "--bundle", runner_bundle, "--set", tmp_path / "y.npz"],
                                           "set_invalid")
    assert "must be float32" in error_kind(["logits", "--bundle", runner_bundle, "--set", tmp_path / "f64.npz"],
                                           "set_invalid")
    assert "outside 0..2" in error_kind(["logits", "--bundle", runner_bundle, "--set", tmp_path / "x.npz", "--rows",
                                         "3"], "usage")
    assert "needs --eps" in error_kind(["logits", "--bundle", runner_bundle, "--set", tmp_path / "x.npz",
                                        "--samples", "4"], "usage")
    assert "needs --eps" in error_kind(["logits", "--bundle", runner_bundle, "--set", tmp_path / "x.npz",
                                        "--samples", "4", "--eps", "0.1", "--norm", "1"], "usage")


def test_a_fleet_shards_the_certified_points_and_names_a_failed_shard(certified, device_python, tmp_path):
    run, doc = certified
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(f"""
[fleet]
concurrency = 3
[defaults]
target = "x86-edge"
python = "{device_python}"
[[device]]
name = "board-a"
host = "local"
root = "{tmp_path / 'a'}"
[[device]]
name = "board-b"
host = "local"
root = "{tmp_path / 'b'}"
[[device]]
name = "board-off"
host = "local:{tmp_path / 'no-python'}"
root = "{tmp_path / 'c'}"
""")
    code, out, err = run_cli("certify", run.path, "--hosts", fleet_file, "--check-samples", "40", "--precision", "fp32")
    assert code == 2 and "1 of 3 shards were not checked" in err
    summary = read_json(run.path / "device" / "fleet-certify_check.json")
    assert summary["violations"] == 0 and summary["unchecked_shards"] == [[2, 3]]
    certified_fp32 = {i for a in doc["artifacts"] if a["precision"] == "fp32" for r in a["rows"]
                      if r["arithmetic"] == "fp32" for i, ok in enumerate(r["points"]["certified"]) if ok}
    checked = {}
    for name in ("board-a", "board-b"):
        for row in read_json(run.path / "device" / name / "certify_check.json")["rows"]:
            for point in row["points"]:
                checked.setdefault(point["point"], []).append(name)
    expected = sorted(certified_fp32)
    assert set(checked) == set(expected[0::3]) | set(expected[1::3])  # the third shard is named, not passed
    assert all(len(names) == 1 for names in checked.values())


def test_samples_that_cannot_fit_one_answer_are_refused_before_connecting(certified, tmp_path):
    run, _ = certified
    config = replace(local("/nonexistent/python", tmp_path / "d"), max_output_mib=0.5)
    with pytest.raises(CertifyCheckError, match="does not fit in one answer of --max-output 0.5 MiB"):
        device_certify_check(run, config, samples=10_000, progress=False)
