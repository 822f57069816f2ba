"""The device runner's commands on a real exported bundle, and every error kind (docs/runner-protocol.md)."""
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from runner_helpers import copy_bundle, error_kind, reseal, run_program, run_runner

from edgerobust.bench import timing
from edgerobust.runner import PROTOCOL, RUNNER_VERSION, commands, stats
from edgerobust.runner.errors import KINDS


def ok(*argv):
    code, doc = run_runner(*argv)
    assert code == 0 and doc["ok"] is True, doc
    assert doc["protocol"] == PROTOCOL and doc["runner_version"] == RUNNER_VERSION and doc["command"] == argv[0]
    return doc["result"]


def host_logits(bundle, precision, x):
    entry = json.loads((bundle / "manifest.json").read_text())["models"][precision]
    session = ort.InferenceSession(str(bundle / entry["file"]), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float32)


def assert_names_its_artifact(figure, bundle, precision):
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["models"][precision]
    assert figure["artifact"]["file"] == entry["file"] and figure["artifact"]["precision"] == precision
    assert figure["artifact"]["sha256"] == manifest["files"][entry["file"]]["sha256"] == entry["sha256"]
    import hashlib

    assert figure["artifact"]["bundle_sha256"] == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    assert figure["runtime"]["name"] == "ort-cpu" and figure["runtime"]["provider"] == "CPUExecutionProvider"
    assert figure["runtime"]["version"] == ort.__version__ and "threads" in figure["runtime"]
    import platform

    assert figure["machine"]["architecture"] == platform.machine()


# ---- the bundle export writes ---------------------------------------------------------------------------------
def test_export_ships_the_runner_and_the_replay_sets(runner_bundle):
    manifest = json.loads((runner_bundle / "manifest.json").read_text())
    runner = manifest["runner"]
    assert runner["protocol"] == PROTOCOL and runner["version"] == RUNNER_VERSION
    shipped = sorted(p.name for p in (runner_bundle / "edgerobust_runner").iterdir())
    source = sorted(p for p in os.listdir(os.path.dirname(stats.__file__)) if p.endswith(".py"))
    assert shipped == source and runner["files"] == [f"edgerobust_runner/{n}" for n in source]
    assert all(name in manifest["files"] for name in runner["files"])
    assert manifest["replay"] == {"pgd-0.1": {"file": "replay/pgd-0.1.npz", "count": 48, "host_robust": True}}
    for precision, entry in manifest["models"].items():
        assert entry["precision"] == precision and entry["sha256"] == manifest["files"][entry["file"]]["sha256"]


# ---- verify ---------------------------------------------------------------------------------------------------
def test_verify_checks_hashes_and_golden_parity_per_precision(runner_bundle):
    result = ok("verify", "--bundle", runner_bundle)
    manifest = json.loads((runner_bundle / "manifest.json").read_text())
    assert result["files"] == len(manifest["files"]) and result["sha256"] == "ok"
    assert sorted(result["golden"]) == ["fp16", "fp32"]
    for precision, figure in result["golden"].items():
        derived = manifest["models"][precision]["golden_tolerance"]
        assert figure["ok"] is True and figure["tolerance_kind"] == "derived"
        assert figure["tolerance"] == derived["max"] and figure["tolerance_file"] == derived["file"]
        assert figure["max_diff_over_bound"] <= 1 and figure["logits_beyond_bound"] == 0
        assert figure["decisions_differing_not_allowed"] == 0
        assert_names_its_artifact(figure, runner_bundle, precision)
    # the figures are the host's definition: recompute them from onnxruntime here
    inputs = np.load(runner_bundle / "golden_inputs.npy")
    golden = np.load(runner_bundle / "golden_outputs.npy")
    expected = np.abs(golden.astype(np.float64) - host_logits(runner_bundle, "fp32", inputs)).max()
    assert result["golden"]["fp32"]["max_abs_diff"] == pytest.approx(expected, rel=0, abs=1e-6)


def test_verify_agrees_with_the_host_check(runner_bundle):
    """The host's `check_golden` and the runner's `verify` use one comparison (runner/tolerance.py)."""
    from edgerobust.export.bundle import check_golden, read_manifest
    from edgerobust.export.tolerance import compare_with_tolerance as host_compare
    from edgerobust.runner.tolerance import compare_with_tolerance as runner_compare

    assert host_compare is runner_compare
    host = check_golden(runner_bundle, read_manifest(runner_bundle))
    device = ok("verify", "--bundle", runner_bundle)["golden"]
    for precision, figures in host.items():  # the same onnxruntime here: the same figures
        for key in ("logits_beyond_bound", "decisions_differing_not_allowed", "decisions_differing"):
            assert device[precision][key] == figures[key]
        assert device[precision]["max_diff_over_bound"] == pytest.approx(figures["max_diff_over_bound"], rel=1e-6)


def without_derived_tolerance(bundle, precision):
    def change(manifest):
        info = manifest["models"][precision].pop("golden_tolerance")
        manifest["files"].pop(info["file"])
        (bundle / info["file"]).unlink()
    return reseal(bundle, change)


def test_verify_falls_back_to_the_parity_tolerance(runner_bundle, tmp_path):
    bundle = copy_bundle(runner_bundle, tmp_path)
    manifest = without_derived_tolerance(bundle, "fp32")
    figure = ok("verify", "--bundle", bundle)["golden"]["fp32"]
    assert figure["ok"] is True and figure["tolerance"] == manifest["models"]["fp32"]["parity"]["tolerance"]
    assert figure["tolerance_kind"] == manifest["models"]["fp32"]["parity"]["tolerance_kind"]
    assert "max_diff_over_bound" not in figure


def set_last_bias(bundle, file_name, change):
    """Change the last Gemm's bias of an ONNX file in the bundle (and re-sign the bundle)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(bundle / file_name)
    gemm = [n for n in proto.graph.node if n.op_type == "Gemm"][-1]
    init = next(i for i in proto.graph.initializer if i.name == gemm.input[2])
    bias = numpy_helper.to_array(init).copy()
    change(bias)
    init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(proto, bundle / file_name)
    reseal(bundle)


@pytest.mark.parametrize("precision, file_name", [("fp32", "model.onnx"), ("fp16", "model.fp16.onnx")])
def test_a_resigned_model_beyond_its_bound_fails_verify(runner_bundle, tmp_path, precision, file_name):
    bundle = copy_bundle(runner_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    shift = 4 * manifest["models"][precision]["golden_tolerance"]["max"]
    set_last_bias(bundle, file_name, lambda bias: bias.__setitem__(0, bias[0] + np.asarray(shift, bias.dtype)))
    assert ok("verify", "--bundle", bundle, "--no-golden")["sha256"] == "ok"  # the hashes alone vouch for it
    message = error_kind(["verify", "--bundle", bundle, "--precision", precision], "parity_failed")
    assert file_name in message and "beyond their derived bound" in message
    other = "fp16" if precision == "fp32" else "fp32"
    assert ok("verify", "--bundle", bundle, "--precision", other)["golden"][other]["ok"] is True


def test_an_unbounded_precision_checks_finiteness_only(runner_bundle, tmp_path):
    bundle = copy_bundle(runner_bundle, tmp_path)

    def unbounded(manifest):
        info = manifest["models"]["fp16"]["golden_tolerance"]
        manifest["files"].pop(info["file"])
        (bundle / info["file"]).unlink()
        info.update(file=None, max=None)
    reseal(bundle, unbounded)
    figure = ok("verify", "--bundle", bundle, "--precision", "fp16")["golden"]["fp16"]
    assert figure["ok"] is True and figure["bounded"] is False and figure["finite"] is True
    assert figure["tolerance"] is None and figure["tolerance_kind"] == "unbounded"
    set_last_bias(bundle, "model.fp16.onnx", lambda bias: bias.__setitem__(0, 1e3))  # far off, but finite
    assert ok("verify", "--bundle", bundle, "--precision", "fp16")["golden"]["fp16"]["ok"] is True
    set_last_bias(bundle, "model.fp16.onnx", lambda bias: bias.__setitem__(0, np.inf))
    assert "non-finite" in error_kind(["verify", "--bundle", bundle, "--precision", "fp16"], "parity_failed")


def test_a_tolerance_file_outside_the_bundle_or_of_another_shape_is_refused(runner_bundle, tmp_path):
    bundle = copy_bundle(runner_bundle, tmp_path)
    mutate_manifest(bundle, lambda m: m["models"]["fp32"]["golden_tolerance"].update(file="../tolerance.npy"))
    assert "models.fp32.golden_tolerance.file" in error_kind(["verify", "--bundle", bundle], "unsafe_path")
    bundle = copy_bundle(runner_bundle, tmp_path / "again")
    name = json.loads((bundle / "manifest.json").read_text())["models"]["fp32"]["golden_tolerance"]["file"]
    (bundle / name).unlink()
    os.symlink(runner_bundle / name, bundle / name)
    assert name in error_kind(["verify", "--bundle", bundle], "unsafe_path")
    (bundle / name).unlink()
    np.save(bundle / name, np.ones((3, 3)))
    reseal(bundle)
    assert "golden_tolerance" in error_kind(["verify", "--bundle", bundle, "--precision", "fp32"], "bundle_invalid")


def test_ping_answers_with_the_versions_and_loads_nothing(runner_bundle):
    import subprocess

    assert ok("ping") == {"protocol": PROTOCOL, "runner_version": RUNNER_VERSION,
                          "python": ".".join(map(str, sys.version_info[:3]))}
    code, doc = run_program(sys.executable, runner_bundle, "ping")
    assert code == 0 and doc["result"]["runner_version"] == RUNNER_VERSION
    done = subprocess.run([sys.executable, "-X", "importtime", str(runner_bundle / "edgerobust_runner" / "run.py"),
                           "ping"], capture_output=True, text=True, timeout=120)
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert done.returncode == 0 and "edgerobust_runner.errors" in imported  # the runner's own imports are seen
    assert not {"numpy", "onnxruntime", "edgerobust_runner.machine"} & imported  # a no-op: the start cost alone


def test_verify_without_golden_and_one_precision(runner_bundle):
    assert ok("verify", "--bundle", runner_bundle, "--no-golden")["golden"] == {}
    assert sorted(ok("verify", "--bundle", runner_bundle, "--precision", "fp16")["golden"]) == ["fp16"]


def test_runner_in_its_bundle_finds_it_and_writes_no_bytecode(runner_bundle):
    code, doc = run_program(sys.executable, runner_bundle, "verify", "--no-golden")
    assert code == 0 and doc["result"]["sha256"] == "ok"
    assert not (runner_bundle / "edgerobust_runner" / "__pycache__").exists()


# ---- bench ----------------------------------------------------------------------------------------------------
def test_bench_reports_both_timings_with_the_host_statistics(runner_bundle):
    result = ok("bench", "--bundle", runner_bundle, "--batch", 4, "--warmup", 2, "--repeats", 7, "--threads", 1)
    assert_names_its_artifact(result, runner_bundle, "fp32")
    assert result["runtime"]["batch"] == 4 and result["runtime"]["threads"] == 1
    for kind in ("compute", "end_to_end"):
        figures = result[kind]
        assert figures["n"] == 7 and figures["min_ms"] <= figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"]
        assert figures["p99_ms"] <= figures["max_ms"] and figures["cv"] == pytest.approx(
            figures["std_ms"] / figures["mean_ms"])
        assert figures["throughput_per_s"] == pytest.approx(4e3 / figures["mean_ms"])
    assert set(result["before"]) == set(result["after"]) == {"thermal", "clocks"}
    assert result["warmup"] == 2 and result["repeats"] == 7


def test_bench_reads_temperatures_and_clocks_through_the_root():
    from pathlib import Path

    from edgerobust.runner import machine

    nano = machine.Root(str(Path(__file__).parent / "fixtures" / "jetson" / "nano-maxn"))
    facts = machine.conditions(nano)
    assert facts["thermal"]["GPU-therm"] == 30.5 and facts["clocks"]["gpu"]["cur_hz"] == 921600000


def test_host_timing_uses_the_runner_statistics():
    assert timing.summarize is stats.summarize and timing.PERCENTILES == stats.PERCENTILES


@given(st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=60))
def test_statistics_definitions(durations):
    figures = stats.summarize(durations)
    ms = np.asarray(durations, dtype=np.float64) * 1e3
    assert figures["p50_ms"] == float(np.percentile(ms, 50)) and figures["mean_ms"] == float(ms.mean())
    assert figures["std_ms"] == float(ms.std()) and figures["n"] == len(durations)
    assert figures["min_ms"] <= figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def test_time_calls_reads_an_injected_clock_twice_per_call():
    ticks = iter(range(0, 10**9, 1000))
    calls = []
    durations = stats.time_calls(lambda: calls.append(1), warmup=3, repeats=4, clock=lambda: next(ticks))
    assert len(calls) == 7 and durations == [1000 * 1e-9] * 4  # the same arithmetic as time_calls


# ---- replay ---------------------------------------------------------------------------------------------------
def test_replay_per_point_predictions_match_onnxruntime(runner_bundle, tmp_path):
    external = tmp_path / "extra.npz"
    golden = np.load(runner_bundle / "golden_inputs.npy")
    labels = np.load(runner_bundle / "golden_labels.npy")
    np.savez(external, x_adv=golden[:5], labels=labels[:5])
    result = ok("replay", "--bundle", runner_bundle, "--batch", 7, "--set", external)
    assert_names_its_artifact(result, runner_bundle, "fp32")
    assert sorted(result["sets"]) == sorted(["clean", "pgd-0.1", str(external)])
    adv = np.load(runner_bundle / "replay" / "pgd-0.1.npz")
    for name, x, y in (("clean", golden, labels), ("pgd-0.1", adv["x_adv"], adv["labels"])):
        figure = result["sets"][name]
        logits = host_logits(runner_bundle, "fp32", x)
        assert figure["predictions"] == logits.argmax(1).tolist()
        assert figure["correct"] == int((logits.argmax(1) == y).sum()) and figure["count"] == len(y)
        top = np.sort(logits.astype(np.float64), 1)
        np.testing.assert_array_equal(figure["margins"], top[:, -1] - top[:, -2])
    pgd = result["sets"]["pgd-0.1"]
    assert pgd["indices"] == adv["indices"].tolist() and pgd["host_robust"] == int(adv["robust"].sum())
    assert pgd["agree_with_host"] == int((adv["robust"] == (np.array(pgd["predictions"]) == adv["labels"])).sum())
    assert result["sets"][str(external)]["predictions"] == result["sets"]["clean"]["predictions"][:5]


def test_replay_fp16_and_without_points(runner_bundle):
    result = ok("replay", "--bundle", runner_bundle, "--precision", "fp16", "--no-points", "--no-clean")
    assert list(result["sets"]) == ["pgd-0.1"] and "predictions" not in result["sets"]["pgd-0.1"]
    assert result["artifact"]["file"] == "model.fp16.onnx"


# ---- smooth ---------------------------------------------------------------------------------------------------
def test_smoothing_votes_follow_the_documented_protocol(runner_bundle):
    result = ok("smooth", "--bundle", runner_bundle, "--sigma", 0.25, "--n", 40, "--batch", 16, "--seed", 7,
                "--start", 3, "--count", 2, "--margin-below", 1.0)
    x = np.load(runner_bundle / "golden_inputs.npy")
    assert [p["row"] for p in result["points"]] == [3, 4]
    for point in result["points"]:
        row = point["row"]
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7, row, 1])))  # the protocol, one draw
        noisy = x[row][None] + np.float32(0.25) * rng.standard_normal((40, *x.shape[1:]), dtype=np.float32)
        logits = host_logits(runner_bundle, "fp32", noisy)
        assert point["counts"] == np.bincount(logits.argmax(1), minlength=10).tolist()
        top = np.sort(logits.astype(np.float64), 1)
        gaps = top[:, -1] - top[:, -2]
        assert [s[0] for s in point["low_margin"]] == np.nonzero(gaps < 1.0)[0].tolist()
        assert sum(point["counts"]) == 40


def test_noise_stream_does_not_depend_on_the_batch():
    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    chunks = [np.concatenate(list(commands.noise_batches(x, 0.5, 23, b, 1, 9))) for b in (1, 5, 23, 64)]
    for other in chunks[1:]:
        np.testing.assert_array_equal(chunks[0], other)
    threaded = np.concatenate(list(commands.prefetched(commands.noise_batches(x, 0.5, 23, 5, 1, 9))))
    np.testing.assert_array_equal(chunks[0], threaded)


def test_sound_stream_does_not_depend_on_the_batch():
    """Words left over from a raw draw (batches not a multiple of 4) and the low bits (a child stream) carry over
    between batches, so any chunking concatenates to one draw."""
    from edgerobust.runner.noise import sound_batches
    from edgerobust.smoothing.sound import discrete_gaussian

    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    t = discrete_gaussian(1.0).thresholds  # σ = 1: 2.6% of the draws take low bits, so every chunking meets some
    chunks = [np.concatenate(list(sound_batches(x, t, 301, b, 1, 9))) for b in (1, 3, 5, 64, 301)]
    for other in chunks[1:]:
        np.testing.assert_array_equal(chunks[0], other)


@pytest.mark.parametrize("sound", [False, True])
def test_prefetched_ring_matches_fresh_arrays(sound):
    """Batches written into a ring of DEPTH + 2 arrays are intact while the caller holds them, however far ahead the
    helper runs (the caller is slowed so the helper waits on a full queue with its next batch drawn)."""
    import time

    from edgerobust.runner.noise import DEPTH, ring, sound_batches
    from edgerobust.smoothing.sound import discrete_gaussian

    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    t = discrete_gaussian(0.5).thresholds

    def draw(buffers=None):
        if sound:
            return sound_batches(x, t, 40, 3, 1, 9, 1, buffers)
        return commands.noise_batches(x, 0.5, 40, 3, 1, 9, 1, buffers)

    fresh = list(draw())
    seen = 0
    for i, batch in enumerate(commands.prefetched(draw(ring(DEPTH)), DEPTH)):
        time.sleep(0.002)  # the helper fills the queue meanwhile, its next batch drawn
        assert np.array_equal(batch, fresh[i])  # still intact after the wait
        seen += 1
    assert seen == len(fresh)


def test_prefetching_starts_at_once_and_stops_when_closed():
    import itertools
    import threading

    drawn = []

    def endless():
        for i in itertools.count():
            drawn.append(i)
            yield i

    before = threading.active_count()
    stream = commands.prefetched(endless(), depth=2)
    deadline = time.monotonic() + 30
    while len(drawn) < 3 and time.monotonic() < deadline:  # drawing began before the first request
        time.sleep(0.01)
    assert len(drawn) >= 3 and next(stream) == 0 and next(stream) == 1
    stream.close()
    assert threading.active_count() == before and list(stream) == []
    assert len(drawn) <= 2 + 2 + 1 + 1  # taken, queued (depth), in hand, the one drawn while closing

    def broken():
        yield 0
        raise ValueError("drawing failed")

    failing = commands.prefetched(broken())
    assert next(failing) == 0
    with pytest.raises(ValueError, match="drawing failed"):
        next(failing)
    assert threading.active_count() == before


def test_selection_and_estimation_streams_differ():
    x = np.zeros((1, 3, 4), dtype=np.float32)
    select = np.concatenate(list(commands.noise_batches(x, 1.0, 50, 50, 3, 0, commands.PHASES["select"])))
    estimate = np.concatenate(list(commands.noise_batches(x, 1.0, 50, 50, 3, 0, commands.PHASES["estimate"])))
    other_row = np.concatenate(list(commands.noise_batches(x, 1.0, 50, 50, 3, 1, commands.PHASES["select"])))
    assert select.dtype == np.float32
    assert not np.any(select == estimate) and not np.any(select == other_row)


def test_smooth_phases_give_independent_votes(runner_bundle):
    args = ("smooth", "--bundle", runner_bundle, "--sigma", 2.0, "--n", 30, "--count", 1)
    select, estimate = ok(*args, "--phase", "select"), ok(*args)
    assert select["phase"] == "select" and estimate["phase"] == "estimate"
    assert select["points"][0]["fingerprint"] != estimate["points"][0]["fingerprint"]


# ---- sealing: the runner's own checks, before anything is read ------------------------------------------------
def mutate_manifest(bundle, change):
    reseal(bundle, change)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/hostname", "a/../model.onnx", "./model.onnx", ""])
def test_model_paths_outside_the_bundle_are_refused(runner_bundle, tmp_path, name):
    bundle = copy_bundle(runner_bundle, tmp_path)
    (tmp_path / "outside.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    mutate_manifest(bundle, lambda m: m["models"]["fp32"].update(file=name))
    for command in ("verify", "bench", "replay"):
        assert "models.fp32.file" in error_kind([command, "--bundle", bundle], "unsafe_path")


def test_links_and_special_files_are_refused(runner_bundle, tmp_path):
    bundle = copy_bundle(runner_bundle, tmp_path)
    os.symlink("/etc", bundle / "etc")  # a directory link is not skipped
    assert "etc" in error_kind(["verify", "--bundle", bundle, "--no-golden"], "unsafe_path")
    os.unlink(bundle / "etc")
    (bundle / "model.onnx").rename(tmp_path / "real.onnx")
    os.symlink(tmp_path / "real.onnx", bundle / "model.onnx")
    assert "model.onnx" in error_kind(["verify", "--bundle", bundle], "unsafe_path")
    os.unlink(bundle / "model.onnx")
    os.link(tmp_path / "real.onnx", bundle / "model.onnx")
    assert "hard link" in error_kind(["verify", "--bundle", bundle], "unsafe_path")
    os.unlink(bundle / "model.onnx")
    os.mkfifo(bundle / "model.onnx")
    assert "regular file" in error_kind(["verify", "--bundle", bundle], "unsafe_path")


def test_a_linked_manifest_is_refused(runner_bundle, tmp_path):
    bundle = copy_bundle(runner_bundle, tmp_path)
    (bundle / "manifest.json").rename(tmp_path / "manifest.json")
    os.symlink(tmp_path / "manifest.json", bundle / "manifest.json")
    error_kind(["verify", "--bundle", bundle], "unsafe_path")


def test_nothing_outside_is_read_when_a_path_escapes(runner_bundle, tmp_path):
    """The escaping model is a FIFO: opening it would block (a timeout here); the check must come first."""
    bundle = copy_bundle(runner_bundle, tmp_path)
    os.mkfifo(tmp_path / "trap.onnx")
    mutate_manifest(bundle, lambda m: m["models"]["fp16"].update(file="../trap.onnx"))
    code, doc = run_program(sys.executable, bundle, "verify", "--precision", "fp16", timeout=120)
    assert code == 2 and doc["error"]["kind"] == "unsafe_path"


# ---- the other error kinds ------------------------------------------------------------------------------------
def test_modified_missing_and_unlisted_files(runner_bundle, tmp_path):
    bundle = copy_bundle(runner_bundle, tmp_path)
    data = bytearray((bundle / "golden_labels.npy").read_bytes())
    data[-1] ^= 1
    (bundle / "golden_labels.npy").write_bytes(bytes(data))
    assert "golden_labels.npy" in error_kind(["verify", "--bundle", bundle], "bundle_modified")
    assert "golden_labels.npy" in error_kind(["bench", "--bundle", bundle], "bundle_modified")
    reseal(bundle)
    (bundle / "extra.txt").write_text("x")
    assert "extra.txt" in error_kind(["verify", "--bundle", bundle], "bundle_modified")
    (bundle / "extra.txt").unlink()
    (bundle / "profile.json").unlink()
    assert "profile.json" in error_kind(["verify", "--bundle", bundle], "bundle_modified")


def test_parity_failure(runner_bundle, tmp_path):
    bundle = copy_bundle(runner_bundle, tmp_path)
    golden = np.load(bundle / "golden_outputs.npy")
    np.save(bundle / "golden_outputs.npy", golden + 0.5)
    reseal(bundle)
    assert "model.onnx" in error_kind(["verify", "--bundle", bundle, "--precision", "fp32"], "parity_failed")


@pytest.mark.parametrize("argv, kind", [
    (["launch"], "usage"),
    ([], "usage"),
    (["bench", "--batch", "many"], "usage"),
    (["bench", "--runtime", "torch-cpu"], "usage"),
    (["smooth", "--sigma", "0.5"], "usage"),
    (["verify", "--bundle", "/nonexistent/bundle"], "bundle_missing"),
    (["bench", "--precision", "int8"], "precision_unavailable"),
    (["bench", "--runtime", "ort-cuda"], "provider_unavailable"),
    (["replay", "--set", "/nonexistent.npz"], "set_invalid"),
])
def test_error_kinds(runner_bundle, argv, kind):
    if argv and argv[0] in ("bench", "smooth", "replay") and "--bundle" not in argv:
        argv = [*argv, "--bundle", runner_bundle]
    error_kind(argv, kind)


def test_bundle_missing_and_invalid(tmp_path):
    error_kind(["verify", "--bundle", tmp_path], "bundle_missing")
    (tmp_path / "manifest.json").write_text("{not json")
    error_kind(["verify", "--bundle", tmp_path], "bundle_invalid")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else", "files": {}}))
    error_kind(["verify", "--bundle", tmp_path], "bundle_invalid")
    error_kind(["verify"], "usage")  # the runner is not inside a bundle here


def test_bad_sets(runner_bundle, tmp_path):
    np.savez(tmp_path / "nolabels.npz", x_adv=np.zeros((2, 1, 8, 8), np.float32))
    np.savez(tmp_path / "shape.npz", x_adv=np.zeros((2, 3, 8, 8), np.float32), labels=np.zeros(2, np.int64))
    np.savez(tmp_path / "pickled.npz", x_adv=np.array([{"code": 1}], dtype=object), labels=np.zeros(1, np.int64))
    for name, words in (("nolabels", "labels"), ("shape", "float32"), ("pickled", "cannot be read")):
        message = error_kind(["replay", "--bundle", runner_bundle, "--set", tmp_path / f"{name}.npz"], "set_invalid")
        assert words in message
    error_kind(["smooth", "--bundle", runner_bundle, "--sigma", 0.1, "--n", 2, "--set", "no-such-set"], "usage")


def test_missing_onnxruntime_names_the_package(runner_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    message = error_kind(["bench", "--bundle", runner_bundle], "runtime_missing")
    assert "onnxruntime" in message and "pip install onnxruntime" in message


def test_missing_tensorrt_names_the_package(runner_bundle, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    message = error_kind(["bench", "--bundle", runner_bundle, "--runtime", "tensorrt", "--cache", tmp_path],
                         "runtime_missing")
    assert "tensorrt" in message and "python3-libnvinfer" in message


def test_an_unexpected_failure_is_internal_with_exit_1(runner_bundle, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(commands, "replay", broken)
    code, doc = run_runner("replay", "--bundle", runner_bundle)
    assert code == 1 and doc["error"] == {"kind": "internal", "message": "ZeroDivisionError: boom"}


def test_python_too_old_is_a_protocol_error(monkeypatch, capsys):
    import runpy
    from pathlib import Path

    monkeypatch.setattr(sys, "version_info", (3, 5, 2, "final", 0))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(Path(stats.__file__).with_name("run.py")), run_name="__main__")
    doc = json.loads(capsys.readouterr().out)
    assert exit_info.value.code == 2 and doc["error"]["kind"] == "python_too_old" and "3.5.2" in doc["error"]["message"]


def test_every_documented_kind_is_in_the_protocol_document():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "runner-protocol.md").read_text()
    assert all(f"`{kind}`" in text for kind in KINDS)


def test_precision_entries_are_data(runner_bundle, tmp_path):
    """An int8 entry for TensorRT only: onnxruntime refuses it by name, its calibration path is sealed too."""
    bundle = copy_bundle(runner_bundle, tmp_path)
    int8 = {"file": "model.onnx", "precision": "int8", "runtimes": ["tensorrt"],
            "calibration_file": "golden_inputs.npy"}
    mutate_manifest(bundle, lambda m: m["models"].update(int8=int8))
    assert "tensorrt only" in error_kind(["bench", "--bundle", bundle, "--precision", "int8"], "precision_unavailable")
    error_kind(["bench", "--bundle", bundle, "--precision", "int8", "--runtime", "tensorrt"], "runtime_missing")
    verified = ok("verify", "--bundle", bundle)["golden"]
    assert verified["int8"]["checked"] is False and verified["fp32"]["ok"] is True
    mutate_manifest(bundle, lambda m: m["models"]["int8"].update(calibration_file="../calib.npz"))
    assert "calibration_file" in error_kind(["verify", "--bundle", bundle], "unsafe_path")


@pytest.mark.parametrize("section", [{"masks_file": "../x.npz"}, {"sets": [{"path": "/etc/passwd"}]},
                                     {"engine": "~/model.engine"}, {"dir": "../"}])
def test_sections_added_later_are_sealed_by_their_keys(runner_bundle, tmp_path, section):
    """The same path keys as the host's checker: a new section is checked without a new rule."""
    bundle = copy_bundle(runner_bundle, tmp_path)
    mutate_manifest(bundle, lambda m: m.update(certify=section))
    assert "certify" in error_kind(["verify", "--bundle", bundle, "--no-golden"], "unsafe_path")


def test_a_pickled_golden_array_is_refused_not_loaded(runner_bundle, tmp_path):
    bundle = copy_bundle(runner_bundle, tmp_path)
    np.save(bundle / "golden_inputs.npy", np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    reseal(bundle)
    assert "golden_inputs.npy" in error_kind(["bench", "--bundle", bundle], "bundle_invalid")


def test_json_is_strict_even_for_non_finite_figures():
    from edgerobust.runner.main import finite

    doc = {"a": [float("nan"), 1.5, {"b": float("inf")}], "c": "text", "d": 3}
    assert json.loads(json.dumps(finite(doc), allow_nan=False)) == {"a": [None, 1.5, {"b": None}], "c": "text", "d": 3}


def test_stdout_carries_only_the_json_document(runner_bundle, monkeypatch, capfd):
    """A runtime printing on file descriptor 1 (C++ code) or sys.stdout does not break the protocol."""
    from edgerobust.runner import main as runner_main

    real_execute = runner_main.execute

    def chatty(args, key_source=None):
        os.write(1, b"native chatter\n")
        print("python chatter")
        return real_execute(args, key_source)

    monkeypatch.setattr(runner_main, "execute", chatty)
    assert runner_main.main(["verify", "--bundle", str(runner_bundle), "--no-golden"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["ok"] is True and out.count("\n") == 1
    assert "native chatter" in err and "python chatter" in err


def test_module_invocation_from_any_directory(runner_bundle, tmp_path):
    """`PYTHONPATH=BUNDLE python3 -B -m edgerobust_runner verify` finds its own bundle (no --bundle)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(runner_bundle)
    done = subprocess.run([sys.executable, "-B", "-m", "edgerobust_runner", "verify", "--no-golden"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and doc["result"]["sha256"] == "ok", done.stderr
    assert not (runner_bundle / "edgerobust_runner" / "__pycache__").exists()


@pytest.mark.parametrize("golden", [{"inputs": {"a": 1}, "outputs": "golden_outputs.npy"}, [1],
                                    {"inputs": ["golden_inputs.npy"], "outputs": "golden_outputs.npy"}])
def test_verify_with_a_golden_table_of_the_wrong_shape_is_bundle_invalid(runner_bundle, tmp_path, golden):
    bundle = copy_bundle(runner_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["golden"] = golden
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    message = error_kind(["verify", "--bundle", bundle], "bundle_invalid")
    assert "golden.inputs must be a file name" in message
