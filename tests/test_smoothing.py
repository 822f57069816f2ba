"""`smooth_run` end to end on the digits model: PyTorch, onnxruntime and the device runner (local), shards, the
pipeline step, the report section and the CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

import edgerobust.devices
from edgerobust.config import DeviceConfig, ExportConfig
from edgerobust.run import RunDir
from edgerobust.runner.noise import PHASES, noise_batches
from edgerobust.smoothing import SMOOTHING_FILE, smooth_run
from edgerobust.smoothing.agreement import differing_votes

LOCAL = DeviceConfig(host="local", target="x86-cpu")  # root: EDGEROBUST_LOCAL_DEVICE (monkeypatched)
SMALL = {"n0": 8, "n": 60, "points": 6, "batch": 25, "sigma": 0.25}


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    """A copy of the digits run with an x86-cpu bundle (so the local runner can run it)."""
    from edgerobust.export.api import export_run

    root = tmp_path_factory.mktemp("smooth")
    shutil.copytree(digits_run.path, root / "run")
    run = RunDir.open(root / "run")
    export_run(run, ExportConfig(target="x86-cpu", calibration=0, golden=4, fp16=False), progress=False)
    return RunDir.open(root / "run")


def votes_by_hand(run, row, phase, n, sigma, seed=0, batch=25):
    """The protocol recounted with the run's own PyTorch model."""
    import torch

    from edgerobust.evaluation.api import test_data

    x = test_data(run, row + 1).images[row].numpy()
    model = run.load_model().eval()
    votes = np.zeros(run.num_classes, np.int64)
    with torch.no_grad():
        for noisy in noise_batches(x, sigma, n, batch, seed, row, PHASES[phase]):
            votes += np.bincount(model(torch.from_numpy(noisy)).argmax(1).numpy(), minlength=len(votes))
    return votes


def test_torch_cpu_certificates_follow_the_protocol(exported, tmp_path):
    shutil.copytree(exported.path, tmp_path / "run")
    (entry,) = smooth_run(tmp_path / "run", progress=False, **SMALL)
    assert [p["row"] for p in entry["points"]] == list(range(6)) and entry["complete"]
    point = entry["points"][2]
    assert point["counts0"] == votes_by_hand(exported, 2, "select", 8, 0.25).tolist()
    assert point["counts"] == votes_by_hand(exported, 2, "estimate", 60, 0.25).tolist()
    for p in entry["points"]:
        assert sum(p["counts0"]) == 8 and sum(p["counts"]) == 60
        assert {p[k] for k in ("sigma", "alpha", "n0", "n", "seed")} >= {0.25, 0.001, 8, 60, 0}
        assert p["runtime"] == "torch-cpu" and p["architecture"] and p["artifact_sha256"]
    assert entry["summary"]["acr"] == pytest.approx(np.mean([p["radius"] if p["correct"] else 0.0
                                                             for p in entry["points"]]), abs=0, rel=1e-12)
    manifest = RunDir.open(tmp_path / "run").manifest
    assert manifest["smoothing"][entry["key"]]["complete"] and "smoothing" in manifest["artifacts"]


def test_shards_merge_into_the_one_entry_of_a_whole_run(exported, tmp_path):
    shutil.copytree(exported.path, tmp_path / "whole")
    shutil.copytree(exported.path, tmp_path / "sharded")
    (whole,) = smooth_run(tmp_path / "whole", progress=False, **SMALL)
    (first,) = smooth_run(tmp_path / "sharded", progress=False, start=0, count=4, **SMALL)
    assert not first["complete"] and len(first["points"]) == 4
    (merged,) = smooth_run(tmp_path / "sharded", progress=False, start=4, **SMALL)
    assert merged["complete"] and merged["shards"] == [[0, 4], [4, 6]]
    assert merged["points"] == whole["points"] and merged["summary"] == whole["summary"]
    doc = json.loads((tmp_path / "sharded" / SMOOTHING_FILE).read_text())
    assert list(doc["results"]) == [merged["key"]]


def test_torchrun_ranks_split_the_rows_of_one_call(exported, tmp_path, monkeypatch):
    shutil.copytree(exported.path, tmp_path / "whole")
    shutil.copytree(exported.path, tmp_path / "ranks")
    (whole,) = smooth_run(tmp_path / "whole", progress=False, **SMALL)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):  # any order: each rank merges its rows under the run's lock
        monkeypatch.setenv("RANK", rank)
        (merged,) = smooth_run(tmp_path / "ranks", progress=False, **SMALL)
    assert merged["shards"] == [[0, 3], [3, 6]] and merged["points"] == whole["points"]


def test_onnxruntime_and_the_device_runner_count_the_same_samples(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEROBUST_LOCAL_DEVICE", str(tmp_path / "device"))
    shutil.copytree(exported.path, tmp_path / "run")
    settings = {**SMALL, "predict": True}
    (host,) = smooth_run(tmp_path / "run", progress=False, runtime="ort-cpu", **settings)
    (device,) = smooth_run(tmp_path / "run", progress=False, device=LOCAL,
                           **settings)
    assert host["record"]["artifact_sha256"] == device["record"]["artifact_sha256"]
    assert device["record"]["where"] == "device" and device["record"]["machine"]["architecture"]
    assert all(p["same_stream_as_host"] for p in device["points"])
    for h, d in zip(host["points"], device["points"], strict=True):  # one onnxruntime, one machine: same votes
        assert (h["counts0"], h["counts"]) == (d["counts0"], d["counts"])
    doc = json.loads((tmp_path / "run" / SMOOTHING_FILE).read_text())
    (agreement,) = doc["agreement"][device["key"]]
    assert agreement["same_seed"] and agreement["differing_at_least"] == 0 and agreement["passed"]
    assert all(r["exact"]["passed"] for r in agreement["rows"])  # small n: the float64 bracket too
    assert "predict" in host["points"][0] and "predict_accuracy" in host["summary"]


@pytest.mark.parametrize("noise", ["gaussian", "sound"])
def test_other_seeds_are_compared_by_a_two_sided_test(exported, tmp_path, monkeypatch, noise):
    monkeypatch.setenv("EDGEROBUST_LOCAL_DEVICE", str(tmp_path / "device"))
    shutil.copytree(exported.path, tmp_path / "run")
    smooth_run(tmp_path / "run", progress=False, runtime="torch-cpu", noise=noise, **SMALL)
    (device,) = smooth_run(tmp_path / "run", progress=False, device=LOCAL, noise=noise,
                           seed=5, **SMALL)
    doc = json.loads((tmp_path / "run" / SMOOTHING_FILE).read_text())
    (agreement,) = doc["agreement"][device["key"]]
    assert not agreement["same_seed"]
    assert all(r["rule"] == "two-sided Fisher test" and 0 <= r["p_value"] <= 1 for r in agreement["rows"])
    assert agreement["passed"]  # the same model under independent noise


def test_differing_votes_is_half_the_l1_distance():
    assert differing_votes([5, 3, 2], [4, 4, 2]) == 1
    assert differing_votes([10, 0], [0, 10, 0]) == 10


def test_cli_and_report_show_several_sigmas(exported, tmp_path):
    shutil.copytree(exported.path, tmp_path / "run")
    code, out, err = run_cli("smooth", tmp_path / "run", "--sigma", "0.25,0.5", "--n0", "4", "--n", "30",
                             "--points", "4", "-q")
    assert code == 0, err
    assert "certified accuracy" in out and (tmp_path / "run" / "figures" / "smoothing_certified.png").is_file()
    doc = json.loads((tmp_path / "run" / SMOOTHING_FILE).read_text())
    assert sorted(e["settings"]["sigma"] for e in doc["results"].values()) == [0.25, 0.5]
    code, out, err = run_cli("report", tmp_path / "run")
    assert code == 0, err
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Randomized smoothing" in report and "What the certificate assumes" in report
    assert "Voráček & Hein" in report


def test_pipeline_smooth_step(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[pipeline]\nsteps = ["train", "smooth"]\n[model]\nspec = "mlp:16"\n[data]\nname = "digits"\n'
                      '[train]\nepochs = 1\naugment = false\n[smooth]\nn0 = 4\nn = 20\npoints = 3\nbatch = 24\n')
    code, out, err = run_cli("pipeline", "--recipe", recipe, "--out", tmp_path / "p", "-q")
    assert code == 0, err
    summary = json.loads((tmp_path / "p" / "pipeline.json").read_text())["summary"]
    assert any(row[0] == "smooth" and "ACR" in row[1] for row in summary)


def test_a_fleet_shards_the_rows_into_one_entry(exported, tmp_path):
    shutil.copytree(exported.path, tmp_path / "run")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[fleet]\nconcurrency = 2\n[defaults]\ntarget = "x86-cpu"\n'
                     f'[[device]]\nname = "a"\nhost = "local"\nroot = "{tmp_path / "a"}"\n'
                     f'[[device]]\nname = "b"\nhost = "local"\nroot = "{tmp_path / "b"}"\n')
    code, out, err = run_cli("smooth", tmp_path / "run", "--hosts", fleet, "--n0", "4", "--n", "20", "--points", "5",
                             "--batch", "8", "-q")
    assert code == 0, err
    doc = json.loads((tmp_path / "run" / SMOOTHING_FILE).read_text())
    (entry,) = doc["results"].values()
    assert entry["complete"] and entry["shards"] == [[0, 3], [3, 5]]
    assert [p["row"] for p in entry["points"]] == list(range(5))


def test_a_fleet_with_different_artifacts_is_refused(exported, tmp_path):
    from edgerobust.export.api import export_run

    shutil.copytree(exported.path, tmp_path / "run")
    profile = (tmp_path / "x86-b.toml")
    text = (Path(edgerobust.devices.__file__).parent / "profiles" / "x86-cpu.toml").read_text()
    profile.write_text(text.replace('name = "x86-cpu"', 'name = "x86-b"').replace(
        'aliases = ["x86", "cpu", "x86-64"]', 'aliases = []').replace("max_opset = 20", "max_opset = 13"))
    export_run(RunDir.open(tmp_path / "run"), ExportConfig(target=str(profile), calibration=0, golden=4, fp16=False),
               progress=False)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[[device]]\nname = "a"\nhost = "local"\ntarget = "x86-cpu"\n'
                     f'[[device]]\nname = "b"\nhost = "local"\ntarget = "{profile}"\n')
    before = (tmp_path / "run" / "model.json").read_bytes()
    code, out, err = run_cli("smooth", tmp_path / "run", "--hosts", fleet, "--n0", "2", "--n", "4", "--points", "2",
                             "-q")
    assert code == 2 and "hold different fp32 artifacts" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / SMOOTHING_FILE).exists()
    assert (tmp_path / "run" / "model.json").read_bytes() == before


@pytest.mark.parametrize("noise", ["gaussian", "sound"])
def test_large_n_same_samples_are_judged_against_the_near_boundary_subsample(exported, tmp_path, monkeypatch, noise):
    from edgerobust.smoothing.agreement import EXACT_MAX, SUBSAMPLE, compare_entries

    monkeypatch.setenv("EDGEROBUST_LOCAL_DEVICE", str(tmp_path / "device"))
    shutil.copytree(exported.path, tmp_path / "run")
    settings = {**SMALL, "n": EXACT_MAX + 1, "points": 2, "batch": 701, "noise": noise}
    (host,) = smooth_run(tmp_path / "run", progress=False, runtime="ort-cpu", **settings)
    (device,) = smooth_run(tmp_path / "run", progress=False, device=LOCAL,
                           **settings)
    doc = json.loads((tmp_path / "run" / SMOOTHING_FILE).read_text())
    (agreement,) = doc["agreement"][device["key"]]
    for row in agreement["rows"]:
        sub = row["near_boundary_subsample"]
        assert sub["samples"] == SUBSAMPLE and 0 <= sub["near_boundary"] <= SUBSAMPLE
        assert sub["limit"] >= sub["near_boundary"] and row["passed"]
    # the rule has teeth: votes that differ beyond the limit fail
    moved = json.loads(json.dumps(device))
    for p in moved["points"]:
        top = max(range(len(p["counts"])), key=p["counts"].__getitem__)
        shift = p["counts"][top]
        p["counts"][top] -= shift
        p["counts"][(top + 1) % len(p["counts"])] += shift
    limits = {r["row"]: {**r["near_boundary_subsample"], "limit": 0} for r in agreement["rows"]}
    judged = compare_entries(host, moved, 0.001, None, limits)
    assert judged["passed"] is False


def test_the_sound_noise_on_the_device_runner_draws_the_hosts_samples(exported, tmp_path, monkeypatch):
    """--noise sound with --host: the device samples against the host's thresholds (sent beside the points), so the
    fingerprints match and one onnxruntime on one machine gives the host's votes; the device certificate gives up
    the same slack."""
    monkeypatch.setenv("EDGEROBUST_LOCAL_DEVICE", str(tmp_path / "device"))
    shutil.copytree(exported.path, tmp_path / "run")
    (host,) = smooth_run(tmp_path / "run", progress=False, runtime="ort-cpu", noise="sound", **SMALL)
    (device,) = smooth_run(tmp_path / "run", progress=False, device=LOCAL, noise="sound", **SMALL)
    assert device["settings"]["noise"] == "sound" and "sound" in device["record"]["noise"]
    assert all(p["same_stream_as_host"] for p in device["points"])
    for h, d in zip(host["points"], device["points"], strict=True):
        assert (h["counts0"], h["counts"], h["p_slack"], h["radius_slack"]) == \
            (d["counts0"], d["counts"], d["p_slack"], d["radius_slack"])
    doc = json.loads((tmp_path / "run" / SMOOTHING_FILE).read_text())
    (agreement,) = doc["agreement"][device["key"]]  # compared with the sound host entry only
    assert agreement["host"] == host["key"] and agreement["differing_at_least"] == 0 and agreement["passed"]
    for row in agreement["rows"]:  # small n: the exact float64 bracket of the sound samples themselves
        assert row["exact"]["passed"] and row["exact"]["disagreeing"] <= row["exact"]["near_boundary"]


@pytest.mark.parametrize("thresholds", [None, "missing", np.array([3, 2], np.int64), np.array([1, 2, 3], np.int64),
                                        np.array([0.5, 1.0])])
def test_the_runner_refuses_sound_noise_without_good_thresholds(exported, tmp_path, thresholds):
    import argparse

    from edgerobust.runner import commands
    from edgerobust.runner.errors import RunnerError
    from edgerobust.runner.runtimes import Options
    from edgerobust.runner.sealed import open_bundle

    path = None
    if isinstance(thresholds, np.ndarray):
        path = tmp_path / "t.npy"
        np.save(path, thresholds)
    elif thresholds == "missing":
        path = tmp_path / "nope.npy"
    args = argparse.Namespace(precision="fp32", sigma=0.25, n=4, batch=4, seed=0, set_spec=None, start=0, count=1,
                              margin_below=None, phase="estimate", no_hash=True, noise="sound",
                              thresholds=None if path is None else str(path))
    with pytest.raises(RunnerError, match="--noise sound needs --thresholds FILE"):
        commands.smooth(open_bundle(str(exported.bundle("x86-cpu"))), Options("ort-cpu", 1, 4), args)


@pytest.mark.parametrize("noise", ["gaussian", "sound"])
def test_a_chunk_of_batches_per_hand_over_counts_the_samples_one_batch_at_a_time_does(monkeypatch, noise):
    """The helper thread hands over several batches at a time (counters.handoff_batches): every batch the session
    sees is the stream's next samples, so the votes are those of one batch per hand-over, n not a multiple of
    the chunk or the batch included."""
    import edgerobust.smoothing.counters as counters

    seen = []

    class Threshold:  # a linear classifier on the mean pixel; records the batches it is given
        def infer(self, batch):
            seen.append(np.array(batch, copy=True))
            score = np.asarray(batch, np.float64).reshape(len(batch), -1).mean(1) - 0.5
            return np.stack([-score, score], 1)

    x = np.random.default_rng(0).random((2, 1, 3, 3)).astype(np.float32)
    results = {}
    for batches in (1, 3, 8):
        monkeypatch.setattr(counters, "HANDOFF_BATCHES", batches)
        monkeypatch.setattr(counters, "HANDOFF_BYTES", 1 << 30)
        seen.clear()
        counter = counters.SessionCounter(Threshold(), 2, 0.25, 3, 7, {}, noise)
        results[batches] = (counter.counts(x, [4, 9], "estimate", 100), [b.shape[0] for b in seen],
                            np.concatenate(seen))
    one = results[1]
    assert one[1] == ([7] * 14 + [2]) * 2 and one[0].sum() == 200
    for batches in (3, 8):
        counts, sizes, samples = results[batches]
        assert (counts == one[0]).all() and (samples == one[2]).all() and max(sizes) == 7
