"""One record per precision and per runtime (issue 21): a precision and a runtime added as records in a fixture
(tests/table_extension.py, nothing else edited) reach profiles, the export plan and bundle, the host's verify, bench,
the runner's arguments and commands, help texts and the report; the tables are the one source of their names."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import table_extension as ext
from runner_helpers import run_runner
from test_devices import _builtin, _to_toml

from edgerobust.config import BenchConfig, ExportConfig
from edgerobust.runner.precisions import PRECISIONS, REFERENCE


@pytest.fixture
def extended(monkeypatch, tmp_path):
    """The extension's records installed for one test; its target profile as a .toml file."""
    ext.install(monkeypatch.setitem)
    path = tmp_path / "x86-tables.toml"
    path.write_text(_to_toml(ext.profile_data(_builtin("x86-cpu"))))
    return path


def test_records_added_in_a_fixture_flow_through_export_bench_runner_and_report(extended, digits_run, tmp_path):
    from edgerobust.bench import bench_run
    from edgerobust.devices import load_profile
    from edgerobust.export.api import export_plan, export_run
    from edgerobust.export.bundle import verify_bundle
    from edgerobust.report import render_report
    from edgerobust.run import RunDir
    from edgerobust.runner.main import build_parser

    profile = load_profile(extended)  # the profile accepts the new runtime and precision
    assert profile.runtimes[0] == ext.RUNTIME and ext.PRECISION in profile.precisions
    assert export_plan(extended, None, None, None)[2] == [REFERENCE, ext.PRECISION]

    run = RunDir.open(shutil.copytree(digits_run.path, tmp_path / "run"))
    result = export_run(run, ExportConfig(target=str(extended), calibration=0, golden=16), progress=False)
    entry = result.manifest["models"][ext.PRECISION]
    assert entry["file"] == "model.tf32.onnx" == ext.RECORD.file_name("onnx")
    assert entry["golden_tolerance"]["file"] == "golden_tolerance.tf32.npy" and entry["parity"]["passed"]
    assert result.manifest["runtime"] == ext.RUNTIME and result.manifest["precisions"] == ["fp32", "tf32"]
    checked = verify_bundle(result.bundle, run_golden=True)["golden"]
    assert checked[ext.PRECISION]["passed"] and checked[ext.PRECISION]["bounded"]

    args = build_parser().parse_args(["bench", "--precision", ext.PRECISION, "--runtime", ext.RUNTIME])
    assert (args.precision, args.runtime) == (ext.PRECISION, ext.RUNTIME)
    code, doc = run_runner("verify", "--bundle", result.bundle, "--runtime", ext.RUNTIME)
    assert code == 0, doc
    golden = doc["result"]["golden"][ext.PRECISION]
    assert golden["ok"] and golden["tolerance_kind"] == "derived" and golden["runtime"]["name"] == ext.RUNTIME
    code, doc = run_runner("bench", "--bundle", result.bundle, "--runtime", ext.RUNTIME, "--precision",
                           ext.PRECISION, "--warmup", "1", "--repeats", "3")
    assert code == 0 and doc["result"]["artifact"]["file"] == "model.tf32.onnx", doc
    code, doc = run_runner("info")
    assert doc["result"]["runtimes"][ext.RUNTIME]["available"], doc

    record = bench_run(run, BenchConfig(target=str(extended), runtimes=[ext.RUNTIME], batches=[1], repeats=3, warmup=1,
                                        precision=ext.PRECISION, memory=False), progress=False)
    rows = {(r["runtime"], r["precision"]) for r in record["results"]}
    assert rows == {(ext.RUNTIME, ext.PRECISION)}, record["results"]
    text = render_report(run).read_text()
    assert f"| {ext.RUNTIME} |" in text and "| x86-tables | tf32 |" in text


def test_help_texts_and_the_runtime_list_read_the_tables(tmp_path):
    """A CLI started after the extension installed its records names them in its help (a separate process: help
    texts are built when the CLI module is imported)."""
    code = ("import sys, table_extension; table_extension.install(); from edgerobust.cli import main; "
            "sys.argv = ['edgerobust'] + sys.argv[1:]; main()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path]), "COLUMNS": "200"}

    def cli(*argv):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return " ".join(done.stdout.split())  # help text wraps wherever the width falls

    assert "fp32, fp16, bf16, int8, fp8, tf32" in cli("bench", "--help")
    assert "tf32" in cli("evaluate", "--help")
    assert ext.RUNTIME in cli("bench", "--list-runtimes")


def test_runner_choices_are_the_tables_without_the_extension(runner_bundle):
    from edgerobust.runner.main import build_parser
    from edgerobust.runner.runtimes import runtime_names

    parser = build_parser()
    with pytest.raises(Exception, match="invalid choice: 'tf32'"):
        parser.parse_args(["bench", "--precision", "tf32"])
    assert list(PRECISIONS) == ["fp32", "fp16", "bf16", "int8", "fp8"]
    assert runtime_names() == ("ort-cpu", "ort-cuda", "ort-tensorrt", "tensorrt")
    code, doc = run_runner("bench", "--runtime", ext.RUNTIME, "--bundle", runner_bundle)
    assert code == 2 and "unknown runtime" in doc["error"]["message"] and "ort-cpu" in doc["error"]["message"]


def test_every_per_precision_file_follows_one_scheme():
    for name, record in PRECISIONS.items():
        assert record.file_name("tolerance") == f"golden_tolerance.{name}.npy"
        assert record.file_name("engine") == f"model.{name}.engine"
        assert record.file_name("onnx") == ("model.onnx" if name == REFERENCE else f"model.{name}.onnx")


def test_host_and_device_share_one_definition():
    """The host takes the protocol, the runner's file list and the runtime names from the runner package."""
    from edgerobust import runner
    from edgerobust.devices import RUNTIME_SPECS, profile_runtimes
    from edgerobust.remote import session
    from edgerobust.runner import runtime_specs

    assert session.PROTOCOL is runner.PROTOCOL
    assert session.runner_files() == [name for name, _ in runner.runner_files()]
    assert RUNTIME_SPECS.get("ort-cpu") is runtime_specs.RUNTIME_SPECS["ort-cpu"]
    assert set(profile_runtimes()) == {n for n, s in runtime_specs.RUNTIME_SPECS.items() if s.deployable}


def test_the_agreement_rule_judges_a_precision_by_top1_and_accuracy(runner_bundle, tmp_path, monkeypatch):
    """A precision whose rule is agreement (as an onnxruntime int8 record would be) is judged on the device by top-1
    agreement and accuracy drop against the entry's limits; a calibrated one (int8 today) is TensorRT's only."""
    from runner_helpers import copy_bundle, reseal

    from edgerobust.runner.parity import agreement
    from edgerobust.runner.precisions import Precision

    golden = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [5.0, 0.0, 0.0]])
    outputs = golden.copy()
    outputs[3] = [0.0, 5.0, 0.0]  # one decision flips, away from its label
    got = agreement(outputs, golden, np.array([0, 1, 2, 0]), 0.75, 0.25)
    assert got["top1_agreement"] == 0.75 and got["accuracy_drop"] == 0.25 and got["passed"]
    assert not agreement(outputs, golden, np.array([0, 1, 2, 0]), 0.8, 0.25)["passed"]
    assert PRECISIONS["int8"].parity == "agreement" and PRECISIONS["fp16"].parity == "derived"

    monkeypatch.setitem(PRECISIONS, "int8q", Precision("int8q", "int8", "agreement", "QDQ int8 on onnxruntime"))
    bundle = copy_bundle(runner_bundle, tmp_path)
    entry = {"file": "model.onnx", "precision": "int8q", "parity": {"min_top1_agreement": 1.0,
                                                                    "max_accuracy_drop": 0.0}}
    reseal(bundle, lambda m: m["models"].update(int8q=entry))
    code, doc = run_runner("verify", "--bundle", bundle, "--precision", "int8q")
    figures = doc["result"]["golden"]["int8q"]
    assert code == 0 and figures["tolerance_kind"] == "agreement" and figures["top1_agreement"] == 1.0, doc
    reseal(bundle, lambda m: m["models"]["int8q"]["parity"].update(min_top1_agreement=1.5))
    code, doc = run_runner("verify", "--bundle", bundle, "--precision", "int8q")
    assert code == 2 and doc["error"]["kind"] == "parity_failed" and "top-1 agreement" in doc["error"]["message"]

    reseal(bundle, lambda m: m["models"].update(int8={**entry, "precision": "int8"}))
    code, doc = run_runner("verify", "--bundle", bundle, "--precision", "int8")
    assert code == 2 and doc["error"]["kind"] == "precision_unavailable" and "tensorrt" in doc["error"]["message"]


def test_a_runner_command_added_as_one_registration(runner_bundle, monkeypatch):
    """A command registered from outside (as architecture.md's recipe says) parses its options, gets the sealed
    bundle and the runtime options, and answers in the protocol's envelope; help and the no-command message name it."""
    from edgerobust.runner import main as runner_main
    from edgerobust.runner.sealed import check_hashes

    def count(args, context):
        return {"files": check_hashes(context.bundle), "precision": args.precision, "runtime": context.options.runtime,
                "twice": 2 * args.times}

    monkeypatch.setitem(runner_main.COMMANDS, "count", runner_main.Command(
        "count", count, lambda sub: sub.add_argument("--times", type=int, default=1), model=True))
    code, doc = run_runner("count", "--bundle", runner_bundle, "--precision", "fp16", "--times", "3")
    assert code == 0 and doc["command"] == "count", doc
    result = doc["result"]
    assert result["precision"] == "fp16" and result["runtime"] == "ort-cpu" and result["twice"] == 6
    assert doc["result"]["files"] == len(json.loads((runner_bundle / "manifest.json").read_text())["files"])
    code, doc = run_runner()
    assert code == 2 and "count" in doc["error"]["message"]
    code, doc = run_runner("count", "--bundle", runner_bundle, "--times", "x")
    assert code == 2 and doc["error"]["kind"] == "usage"
