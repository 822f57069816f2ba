"""Every bad input answered (issue 9 §2): one parametrised case per bad input, across the commands.

Each case must exit 2 with a single line naming what is wrong, no traceback, and no file created or changed.
A fuzz test then feeds random bytes to every file the tool reads: each reader either succeeds or raises a typed
EdgeRobustError, never anything else.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import platform
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from user_data import image_folder

from edgerobust.config import ExportConfig
from edgerobust.errors import EdgeRobustError
from edgerobust.io import sha256_file

RUN = "run"  # every case gets a fresh copy of the trained digits run at tmp/run
OTHER_ARCH_TARGET = "jetson" if platform.machine() in ("x86_64", "AMD64") else "x86-cpu"  # bench cannot stand for


@pytest.fixture(scope="module")
def bundle_source(digits_run, tmp_path_factory):
    from edgerobust.export.api import export_run
    from edgerobust.run import RunDir

    root = tmp_path_factory.mktemp("bundle")
    shutil.copytree(digits_run.path, root / "run")  # export records itself in the run: never in the shared one
    out = root / "bundle"
    export_run(RunDir.open(root / "run"), ExportConfig(target="x86-cpu", calibration=0, golden=4, fp16=False),
               out=out, progress=False)
    return out


def snapshot(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        out[key] = path.read_bytes() if path.is_file() else "<dir>"
    return out


def readonly(path: Path) -> Path:
    """A directory nothing can be written into, for root too (immutable attribute) or by permissions."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("running as root where the immutable attribute is not available: no read-only directory")
    else:
        path.chmod(0o555)
    return path


def release(path: Path) -> None:
    if path.exists():
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755)


def edit_manifest(run: Path, change) -> None:
    manifest = json.loads((run / "model.json").read_text())
    change(manifest)
    (run / "model.json").write_text(json.dumps(manifest))


def other_shape_run(tmp: Path) -> Path:
    other = tmp / "other"
    shutil.copytree(tmp / RUN, other)
    edit_manifest(other, lambda m: m["model"].update(input_shape=[3, 8, 8], mean=[0.5] * 3, std=[0.5] * 3))
    return other


def state(tmp: Path) -> dict:
    return torch.load(tmp / RUN / "model.pt", weights_only=True)


def save_state(tmp: Path, value) -> None:
    buffer = tmp / RUN / "model.pt"
    torch.save(value, buffer)


def idx(shape: tuple[int, ...], data: bytes = b"") -> bytes:
    return bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}i", *shape) + data


def mnist_dir(tmp: Path, images: bytes, labels: bytes) -> Path:
    root = tmp / "mnist"
    root.mkdir()
    (root / "t10k-images-idx3-ubyte").write_bytes(images)
    (root / "t10k-labels-idx1-ubyte").write_bytes(labels)
    (root / "train-images-idx3-ubyte").write_bytes(images)
    (root / "train-labels-idx1-ubyte").write_bytes(labels)
    return root


def cifar_dir(tmp: Path, labels) -> Path:
    root = tmp / "cifar" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root.parent


def resign(bundle: Path, name: str, data: bytes) -> None:
    (bundle / name).write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(bundle / name), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def damaged_checkpoint(out: Path) -> None:
    """A run directory whose checkpoint.pt is torch's format and ours, but lacks every field but the format."""
    import torch

    out.mkdir()
    torch.save({"format": "edgerobust-train-checkpoint-1"}, out / "checkpoint.pt")


def copy_bundle(tmp: Path, source: Path) -> Path:
    shutil.copytree(source, tmp / "bundle")
    return tmp / "bundle"


EVAL = ["--n", "5", "--steps", "2", "--queries", "5", "--minimal", "none", "--no-masking", "-q"]
TRAIN = ["--model", "mlp:8", "--data", "digits", "--epochs", "1", "-q"]
SMOOTH = ["--n0", "2", "--n", "4", "--points", "3", "-q"]
DISTILL = ["--epochs", "1", "-q", "--out"]


# (id, setup(tmp, bundle_source) -> CLI args, expected words in the one line)
CASES = [
    # output paths
    ("train-readonly-parent", lambda t, b: ["train", *TRAIN, "--out", readonly(t / "ro") / "r"], "cannot"),
    ("compress-readonly-parent", lambda t, b: ["compress", "--model", t / RUN, "--method", "l1", "--retrain-epochs",
                                               "0", "--out", readonly(t / "ro") / "c", "-q"], "cannot"),
    ("pipeline-readonly-parent", lambda t, b: ["pipeline", "--steps", "train", "--out", readonly(t / "ro") / "p",
                                               "-q"], "cannot"),
    ("report-readonly-run", lambda t, b: ["report", readonly(t / RUN)], "is not writable; make it writable"),
    ("train-resume-checkpoint-without-keys", lambda t, b: (damaged_checkpoint(t / "r"),
                                                           ["train", *TRAIN, "--out", t / "r", "--resume"])[1],
     "lacks epoch, global_step"),
    ("train-name-too-long", lambda t, b: ["train", *TRAIN, "--out", t / ("a" * 300)], "longer than the file system"),
    ("pipeline-name-too-long", lambda t, b: ["pipeline", "--steps", "train", "--out", t / ("p" * 300), "-q"],
     "longer than the file system"),
    # shapes and sizes
    ("evaluate-transfer-other-shape", lambda t, b: ["evaluate", t / RUN, "--transfer", other_shape_run(t), *EVAL],
     "takes inputs"),
    ("evaluate-ensemble-other-shape", lambda t, b: ["evaluate", t / RUN, "--ensemble", other_shape_run(t), *EVAL],
     "takes inputs"),
    ("compress-data-other-shape", lambda t, b: ["compress", "--model", t / RUN, "--data", "synthetic", "--method",
                                                "l1", "--retrain-epochs", "0", "--out", t / "c", "-q"], "shape"),
    ("train-absurd-widths", lambda t, b: ["train", *TRAIN[:0], "--model", "scnn2:1000000000-1000000000", "--data",
                                          "digits", "--out", t / "r", "-q"], "too large to allocate"),
    ("train-zero-width", lambda t, b: ["train", "--model", "scnn2:0-32", "--data", "digits", "--out", t / "r", "-q"],
     "at least 1"),
    ("models-unallocatable-shape", lambda t, b: ["models", "--shape", "3,1000000,1000000"], "cannot be allocated"),
    ("models-zero-classes", lambda t, b: ["models", "--classes", "0"], "at least 2 classes"),
    ("models-negative-classes", lambda t, b: ["models", "--classes", "-3"], "at least 2 classes"),
    ("manifest-zero-classes", lambda t, b: (edit_manifest(t / RUN, lambda m: m["model"].update(num_classes=0)),
                                            ["evaluate", t / RUN, *EVAL])[1], "classes"),
    # corrupt checkpoints
    *[(f"model-pt-random-bytes-{seed}",
       lambda t, b, seed=seed: ((t / RUN / "model.pt").write_bytes(np.random.default_rng(seed).bytes(2000)),
                                ["evaluate", t / RUN, *EVAL])[1], "model.pt") for seed in range(11)],
    ("model-pt-missing-key", lambda t, b: (save_state(t, dict(list(state(t).items())[1:])),
                                           ["evaluate", t / RUN, *EVAL])[1], "does not fit"),
    ("model-pt-wrong-rank-pruned", lambda t, b: (
        edit_manifest(t / RUN, lambda m: m["model"].update(physically_pruned=True)),
        save_state(t, {k: (v.flatten(1) if v.ndim == 4 else v) for k, v in state(t).items()}),
        ["evaluate", t / RUN, *EVAL])[2], "does not fit"),
    ("model-pt-raw-pickle", lambda t, b: ((t / RUN / "model.pt").write_bytes(pickle.dumps({"weight": [1, 2]})),
                                          ["evaluate", t / RUN, *EVAL])[1], "not a checkpoint at all"),
    ("model-pt-code-pickle", lambda t, b: ((t / RUN / "model.pt").write_bytes(
        b"cos\nsystem\n(S'echo hacked'\ntR."), ["evaluate", t / RUN, *EVAL])[1], "was not loaded"),
    # manifests
    ("manifest-missing-model", lambda t, b: (edit_manifest(t / RUN, lambda m: m.pop("model")),
                                             ["evaluate", t / RUN, *EVAL])[1], "not an edgerobust run manifest"),
    ("manifest-shape-is-text", lambda t, b: (edit_manifest(t / RUN, lambda m: m["model"].update(input_shape="8x8")),
                                             ["evaluate", t / RUN, *EVAL])[1], "input_shape"),
    ("manifest-spec-is-number", lambda t, b: (edit_manifest(t / RUN, lambda m: m["model"].update(spec=7)),
                                              ["report", t / RUN])[1], "spec"),
    ("manifest-dataset-is-list", lambda t, b: (edit_manifest(t / RUN, lambda m: m.update(dataset=[1])),
                                               ["evaluate", t / RUN, *EVAL])[1], "dataset"),
    ("manifest-is-a-list", lambda t, b: ((t / RUN / "model.json").write_text("[1, 2]"),
                                         ["report", t / RUN])[1], "not an edgerobust run manifest"),
    ("robustness-json-is-a-list", lambda t, b: ((t / RUN / "robustness.json").write_text("[]"),
                                                ["report", t / RUN])[1], "robustness"),
    # bundles
    ("bundle-files-is-a-list", lambda t, b: (edit_bundle(copy_bundle(t, b), lambda m: m.update(files=[])),
                                             ["verify", t / "bundle"])[1], "manifest"),
    ("bundle-entry-without-sha", lambda t, b: (edit_bundle(copy_bundle(t, b),
                                                           lambda m: m["files"]["model.onnx"].pop("sha256")),
                                               ["verify", t / "bundle"])[1], "manifest"),
    ("bundle-models-is-a-list", lambda t, b: (edit_bundle(copy_bundle(t, b), lambda m: m.update(models=[1])),
                                              ["verify", t / "bundle"])[1], "manifest"),
    ("bundle-golden-inputs-is-a-dict", lambda t, b: (edit_bundle(copy_bundle(t, b),
                                                                 lambda m: m["golden"].update(inputs={"a": 1})),
                                                     ["verify", t / "bundle", "--golden"])[1], "golden"),
    ("bundle-golden-inputs-is-a-list", lambda t, b: (edit_bundle(copy_bundle(t, b),
                                                                 lambda m: m["golden"].update(inputs=["x.npy"])),
                                                     ["verify", t / "bundle", "--golden"])[1], "golden"),
    ("bundle-golden-is-a-list", lambda t, b: (edit_bundle(copy_bundle(t, b), lambda m: m.update(golden=[1])),
                                              ["verify", t / "bundle", "--golden"])[1], "golden"),
    ("bundle-garbage-npy-resigned", lambda t, b: (resign(copy_bundle(t, b), "golden_inputs.npy", b"garbage" * 9),
                                                  ["verify", t / "bundle"])[1], "golden_inputs.npy"),
    # data files
    ("mnist-negative-dims", lambda t, b: ["train", *TRAIN[:2], "--data", "mnist", "--data-root",
                                          mnist_dir(t, idx((-1, -28, 28), bytes(784)), idx((1,), b"\0")),
                                          "--out", t / "r", "--epochs", "1", "-q"], "mnist"),
    ("mnist-zero-images", lambda t, b: ["train", *TRAIN[:2], "--data", "mnist", "--data-root",
                                        mnist_dir(t, idx((0, 28, 28)), idx((0,))), "--out", t / "r", "--epochs", "1",
                                        "-q"], "no images"),
    ("cifar-string-labels", lambda t, b: ["train", *TRAIN[:2], "--data", "cifar10", "--data-root",
                                          cifar_dir(t, ["cat", "dog"]), "--out", t / "r", "-q"], "cifar10"),
    ("svhn-zero-byte-mat", lambda t, b: ((t / "svhn").mkdir(), (t / "svhn" / "train_32x32.mat").write_bytes(b""),
                                         ["train", *TRAIN[:2], "--data", "svhn", "--data-root", t / "svhn",
                                          "--out", t / "r", "-q"])[2], "svhn"),
    # numbers
    ("seed-beyond-64-bits", lambda t, b: ["train", *TRAIN, "--seed", str(2 ** 70), "--out", t / "r"], "seed"),
    ("negative-weight-decay", lambda t, b: ["train", *TRAIN, "--weight-decay", "-1", "--out", t / "r"],
     "--weight-decay = -1.0 must be at least 0"),
    ("evaluate-batch-size-0", lambda t, b: ["evaluate", t / RUN, *EVAL, "--batch-size", "0"], "batch-size"),
    ("evaluate-n-0", lambda t, b: ["evaluate", t / RUN, *EVAL[2:], "--n", "0"], "--n"),
    # an error names the option typed, also where it sets a key of another name or a value checked with others
    ("evaluate-queries-0", lambda t, b: ["evaluate", t / RUN, *EVAL, "--queries", "0"], "--queries = 0 must be"),
    ("evaluate-restarts-0", lambda t, b: ["evaluate", t / RUN, *EVAL, "--restarts", "0"], "--restarts = 0 must be"),
    ("evaluate-targets-0", lambda t, b: ["evaluate", t / RUN, *EVAL, "--targets", "0"], "--targets = 0 must be"),
    ("train-adv-steps-0", lambda t, b: ["train", *TRAIN, "--adv-steps", "0", "--out", t / "r"],
     "--adv-steps = 0 must be"),
    ("train-adv-weight-negative", lambda t, b: ["train", *TRAIN, "--adv-weight", "-1", "--out", t / "r"],
     "--adv-weight = -1.0 must be"),
    ("train-unknown-eps-schedule", lambda t, b: ["train", *TRAIN, "--eps-schedule", "bogus", "--out", t / "r"],
     "--eps-schedule = 'bogus' is not one of"),
    ("train-unknown-lr-schedule", lambda t, b: ["train", *TRAIN, "--schedule", "bogus", "--out", t / "r"],
     "error: --schedule: unknown lr schedule 'bogus'"),
    ("evaluate-negative-curve-eps", lambda t, b: ["evaluate", t / RUN, *EVAL, "--curve", "--curve-eps", "0,-1"],
     "--curve-eps[1] = -1.0 must be"),
    ("compress-keep-above-1", lambda t, b: ["compress", "--model", t / RUN, "--keep", "1.5", "--out", t / "c", "-q"],
     "error: --keep = 1.5 is outside (0, 1]"),
    ("compress-unknown-adv", lambda t, b: ["compress", "--model", t / RUN, "--adv", "bogus", "--out", t / "c", "-q"],
     "--adv = 'bogus' is not one of"),
    ("pipeline-unknown-step", lambda t, b: ["pipeline", "--steps", "bogus", "--out", t / "p", "-q"],
     "unknown pipeline step 'bogus'"),
    ("pipeline-recipe-steps-not-a-list", lambda t, b: ((t / "r.toml").write_text('[pipeline]\nsteps = "train"\n'),
                                                       ["pipeline", "--recipe", t / "r.toml", "--out", t / "p",
                                                        "-q"])[1], "must be a list"),
    # a later step's settings are checked before the first runs, so nothing is trained for nothing
    *[(f"pipeline-bad-{step}-settings", lambda t, b, table=table: (
        (t / "r.toml").write_text(f'[pipeline]\nsteps = ["train", "export", "bench", "device"]\n{table}\n'),
        ["pipeline", "--recipe", t / "r.toml", "--out", t / "p", "-q"])[1], expected)
      for step, table, expected in (
          ("export-target", '[export]\ntarget = "bogus"', "unknown target 'bogus'"),
          ("export-precision", '[export]\ntarget = "jetson-nano"\nint8 = true', "does not support int8"),
          ("bench-target", f'[bench]\ntarget = "{OTHER_ARCH_TARGET}"', "but this machine is"),
          ("device-host", '[device]\nhost = "u@h:0"', "port '0' must be"),
          ("device-name", '[device]\nname = "../elsewhere"', "[device] name '../elsewhere' is not a usable name"))],
    ("pipeline-failing-first-step", lambda t, b: ((t / "r.toml").write_text(
        '[pipeline]\nsteps = ["train"]\n[model]\nspec = "mlp:0"\n'),
        ["pipeline", "--recipe", t / "r.toml", "--out", t / "p", "-q"])[1], "at least 1"),
    # int8 (onnxruntime on CPU targets)
    ("export-int8-target-without-it", lambda t, b: ["export", t / RUN, "-t", "jetson-nano", "--int8", "-q"],
     "does not support int8"),
    ("export-int8-no-calibration", lambda t, b: ["export", t / RUN, "-t", "x86-cpu", "--int8", "--calibration", "0",
                                                 "-q"], "needs a calibration set"),
    ("export-int8-over-tolerance", lambda t, b: ["export", t / RUN, "-t", "x86-cpu", "--int8", "--calibration", "1",
                                                 "--int8-max-drop", "0", "--int8-min-agreement", "1", "-q"],
     "against fp32"),
    ("export-int8-bad-method", lambda t, b: ["export", t / RUN, "--int8-method", "mse", "-q"], "mse"),
    # quantization-aware training
    ("train-qat-negative-freeze-step", lambda t, b: ((t / "r.toml").write_text(
        "[train]\nqat = true\nqat_freeze_step = -1\n"), ["train", *TRAIN, "--recipe", t / "r.toml", "--out",
                                                            t / "r"])[1], "qat_freeze_step = -1 must be at least 0"),
    ("compress-qat-without-retraining", lambda t, b: ["compress", "--model", t / RUN, "--method", "l1", "--qat",
                                                      "--retrain-epochs", "0", "--out", t / "c", "-q"],
     "retrain_epochs is 0"),
    ("export-qat-record-of-another-model", lambda t, b: (edit_run(t / RUN, lambda m: m["training"].update(qat={
        "freeze_step": 1, "weights": "", "activations": "", "rounding": "",
        "points": {"net.9": {"input": [0.1, 0], "output": [0.1, 0]}}})),
        ["export", t / RUN, "-t", "x86-cpu", "--int8", "-q"])[1], "no quantizer for operator Conv"),
    # --recipe on export, evaluate and bench: a bad section is one line naming the recipe, section and key
    *[(f"{command}-recipe-{what}", lambda t, b, command=command, table=table: (
        (t / "r.toml").write_text(table), [command, t / RUN, "--recipe", t / "r.toml", "-q"])[1], expected)
      for command, what, table, expected in (
          ("export", "bad-value", "[export]\ngolden = 0\n", "r.toml: [export] golden = 0 must be at least 1"),
          ("export", "unknown-key", "[export]\ngoldne = 8\n", "[export]: unknown key(s) goldne"),
          ("evaluate", "bad-type", '[evaluate]\neps = "big"\n', "[evaluate] eps = 'big' is not a number"),
          ("evaluate", "misspelt-section", "[evalute]\nn = 8\n", "unknown section(s) [evalute]"),
          ("bench", "bad-value", "[bench]\nrepeats = 0\n", "r.toml: [bench] repeats = 0 must be at least 1"),
          ("bench", "empty-batches", "[bench]\nbatches = []\n", "[bench] batches is empty"),
          ("bench", "not-toml", "[bench\n", "is not valid TOML"))],
    ("bench-host-recipe-bad-device", lambda t, b: ((t / "r.toml").write_text("[device]\nwarmup = -1\n"),
                                                   ["bench", t / RUN, "--host", "local", "--recipe", t / "r.toml",
                                                    "-q"])[1], "[device] warmup = -1 must be at least 0"),
    ("bench-host-max-output-zero", lambda t, b: ["bench", t / RUN, "--host", "local", "--max-output", "0", "-q"],
     "--max-output = 0.0 must be greater than 0"),
    ("evaluate-missing-recipe", lambda t, b: ["evaluate", t / RUN, "--recipe", t / "none.toml", "-q"],
     "recipe file"),
    ("train-certified-loss-on-a-residual-net", lambda t, b: ["train", "--model", "resnet20", "--data", "digits",
                                                            "--loss", "ibp", "--epochs", "1", "-q", "--out", t / "r"],
     "--loss ibp: cannot bound layer 'net' (CifarResNet)"),
    ("certify-unknown-method-lists-lipschitz", lambda t, b: ["certify", b, "--method", "lip"],
     "choose one of ibp, crown, alpha-crown, lipschitz, peck"),
    # certify: ε, a method, an undeclared arithmetic model, an artifact that does not match its bundle
    ("certify-eps-above-1", lambda t, b: ["certify", b, "--eps", "1.5"], "--eps 1.5 is outside [0, 1]"),
    ("certify-eps-negative", lambda t, b: ["certify", b, "--eps", "-0.1"], "outside [0, 1]"),
    ("certify-unknown-method", lambda t, b: ["certify", b, "--method", "bogus"], "unknown method 'bogus'"),
    ("certify-undeclared-arithmetic", lambda t, b: ["certify", b, "--arithmetic", "fp16"],
     "arithmetic model fp16 is not declared for fp32 artifacts"),
    ("certify-artifact-hash-mismatch", lambda t, b: (shutil.copytree(b, t / "bundle"),
                                                     (t / "bundle" / "model.onnx").open("ab").write(b"\0"),
                                                     ["certify", t / "bundle"])[2], "does not match its bundle"),
    ("certify-bundle-outside-a-run", lambda t, b: ["certify", b, "--n", "1"], "is not inside a run"),
    # certify --host: the device check needs a run's certificates with per-point bounds, read before connecting
    ("certify-host-on-a-bundle", lambda t, b: ["certify", b, "--host", "local"], "give the run directory"),
    ("certify-host-without-certificates", lambda t, b: ["certify", t / RUN, "--host", "local", "--target", "x86-cpu"],
     "has no certificates.json; run `edgerobust certify"),
    ("certify-host-corrupt-certificates", lambda t, b: ((t / RUN / "certificates.json").write_text("{not json"),
                                                        ["certify", t / RUN, "--host", "local", "--target",
                                                         "x86-cpu"])[1], "is not readable JSON"),
    ("certify-host-certificates-without-point-bounds", lambda t, b: (
        (t / RUN / "certificates.json").write_text(json.dumps({
            "norm": "inf", "n": 2,
            "artifacts": [{"precision": "fp32", "rows": [{"eps": 0.01, "arithmetic": "fp32"}]}]})),
        ["certify", t / RUN, "--host", "local", "--target", "x86-cpu"])[1], "predates the device check"),
    ("distill-missing-teacher", lambda t, b: ["distill", "--teacher", t / "nope", *DISTILL, t / "d"],
     "run directory"),
    ("distill-corrupt-teacher", lambda t, b: ((t / RUN / "model.pt").write_bytes(b"not a checkpoint"),
                                              ["distill", "--teacher", t / RUN, *DISTILL, t / "d"])[1], "model.pt"),
    ("distill-teacher-other-shape", lambda t, b: ["distill", "--teacher", other_shape_run(t), *DISTILL, t / "d"],
     "must share input shape and classes"),
    ("distill-zero-temperature", lambda t, b: ["distill", "--teacher", t / RUN, "-T", "0", *DISTILL, t / "d"],
     "--temperature = 0.0 must be greater than 0"),
    ("distill-negative-sweep", lambda t, b: ["distill", "--teacher", t / RUN, "--sweep", "1,-2", *DISTILL, t / "d"],
     "-2.0 is not positive"),
    ("distill-unknown-method", lambda t, b: ["distill", "--teacher", t / RUN, "--method", "bogus", *DISTILL,
                                             t / "d"], "--method = 'bogus' is not one of"),
    ("distill-unknown-student", lambda t, b: ["distill", "--teacher", t / RUN, "--student", "bogus", *DISTILL,
                                              t / "d"], "unknown model 'bogus'"),
    ("distill-labels-from-unlabelled-pool", lambda t, b: ["distill", "--teacher", t / RUN, "--method", "hinton",
                                                          "--pool", "synthetic", *DISTILL, t / "d"], "needs labels"),
    ("distill-old-alpha-flag", lambda t, b: ["distill", "--teacher", t / RUN, "--alpha", "0.5", *DISTILL, t / "d"],
     "distill --alpha is now --soft-weight"),
    ("distill-old-alpha-key", lambda t, b: ((t / "r.toml").write_text("[distill]\nalpha = 0.5\n"),
                                            ["distill", "--teacher", t / RUN, "--recipe", t / "r.toml", *DISTILL,
                                             t / "d"])[1], "[distill]: alpha is now soft_weight"),
    ("distill-soft-weight-above-one", lambda t, b: ["distill", "--teacher", t / RUN, "--soft-weight", "2", *DISTILL,
                                                    t / "d"], "--soft-weight = 2.0 must be at most 1"),
    ("train-loss-option-alpha-for-hinton", lambda t, b: (
        (t / "r.toml").write_text(f'[train]\nloss = "hinton"\nloss_options = {{teacher = "{t / RUN}", alpha = 0.5}}\n'),
        ["train", "--model", "scnn2:4-8", "--data", "digits", "--recipe", t / "r.toml", "--out", t / "r2", "-q"])[1],
     "loss 'hinton' has no setting alpha (the soft term's weight is soft_weight)"),
    ("markup-in-user-text", lambda t, b: ["train", "--model", "[train]bogus", "--data", "digits", "--out", t / "r",
                                          "-q"], "[train]bogus"),
    # randomized smoothing
    *[(f"smooth-{name}", lambda t, b, args=args: ["smooth", t / RUN, *SMOOTH, *(b if a is None else a for a in args)],
       expected)
      for name, args, expected in (
          ("sigma-zero", ["--sigma", "0"], "--sigma = 0.0 must be greater than 0"),
          ("sigma-negative-in-list", ["--sigma", "0.25,-1"], "--sigma = -1.0 must be greater than 0"),
          ("alpha-one", ["--alpha", "1"], "--alpha = 1.0 must be less than 1"),
          ("alpha-zero", ["--alpha", "0"], "--alpha = 0.0 must be greater than 0"),
          ("n0-zero", ["--n0", "0"], "--n0 = 0 must be at least 1"),
          ("n-zero", ["--n", "0"], "--n = 0 must be at least 1"),
          ("batch-zero", ["--batch", "0"], "--batch = 0 must be at least 1"),
          ("unknown-runtime", ["--runtime", "bogus"], "--runtime bogus is not a host runtime"),
          ("runtime-missing", ["--runtime", "ort-openvino"], "runtime ort-openvino is not available here"),
          ("start-beyond-points", ["--start", "5"], "--start = 5 must be below points = 3"),
          ("host-and-hosts", ["--host", "local", "--hosts", "fleet.toml"], "give --host or --hosts, not both"),
          ("unknown-noise", ["--noise", "uniform"], "--noise = 'uniform' is not one of: gaussian, sound"),
          ("artifact-lacks-precision", ["--runtime", "ort-cpu", "--precision", "fp16", "--artifact", None],
           "has no fp16 ONNX model"))],
    ("smooth-recipe-bad-key", lambda t, b: ((t / "r.toml").write_text('[pipeline]\nsteps = ["train", "smooth"]\n'
                                                                      '[smooth]\nalpha = 2\n'),
                                            ["pipeline", "--recipe", t / "r.toml", "--out", t / "p", "-q"])[1],
     "[smooth] alpha = 2.0 must be less than 1"),
    ("train-smoothing-loss-bad-sigma", lambda t, b: ["train", *TRAIN, "--loss", "gaussian", "--loss-options",
                                                     '{"sigma": 0}', "--out", t / "r"], "σ must be greater than 0"),
    ("train-loss-options-not-json", lambda t, b: ["train", *TRAIN, "--loss", "macer", "--loss-options", "m=4",
                                                  "--out", t / "r"], "--loss-options 'm=4' is not JSON"),
    # your model, your weights, your data (issue 26)
    ("train-import-path-no-module", lambda t, b: ["train", "--model", "nosuchpackage.nets:net", "--data", "digits",
                                                  "--out", t / "r", "-q"], "No module named 'nosuchpackage'"),
    ("train-import-path-no-attribute", lambda t, b: ["train", "--model", "edgerobust.models.lenet:nothing", "--data",
                                                     "digits", "--out", t / "r", "-q"], "has no attribute 'nothing'"),
    ("train-factory-returns-no-module", lambda t, b: ["train", "--model", "collections:OrderedDict", "--data",
                                                      "digits", "--out", t / "r", "-q"], "not a torch.nn.Module"),
    ("train-factory-raises", lambda t, b: ["train", "--model", "json:loads", "--data", "digits", "--out", t / "r",
                                           "-q"], "raised TypeError"),
    ("train-kwargs-for-a-zoo-model", lambda t, b: ["train", *TRAIN, "--kwargs", '{"width": 3}', "--out", t / "r"],
     "takes no [model] kwargs"),
    ("train-kwargs-not-json", lambda t, b: ["train", *TRAIN, "--kwargs", "width=3", "--out", t / "r"], "not JSON"),
    ("train-mean-wrong-channels", lambda t, b: ["train", *TRAIN, "--mean", "0.1,0.2", "--out", t / "r"],
     "one per channel"),
    ("import-weights-do-not-fit", lambda t, b: ["import", "--model", "scnn2:4-4", "--weights", t / RUN / "model.pt",
                                                "--data", "digits", "--out", t / "i"], "do not fit model"),
    ("import-weights-not-a-state-dict", lambda t, b: (torch.save([1, 2], t / "w.pt"), [
        "import", "--model", "scnn2:4-4", "--weights", t / "w.pt", "--data", "digits", "--out", t / "i"])[1],
     "does not hold a state dict"),
    ("import-weights-code-pickle", lambda t, b: (torch.save({"w": torch.nn.ReLU()}, t / "w.pt"), [
        "import", "--model", "scnn2:4-4", "--weights", t / "w.pt", "--data", "digits", "--out", t / "i"])[1],
     "w.pt is corrupt or truncated"),
    ("import-weights-bad-safetensors", lambda t, b: ((t / "w.safetensors").write_bytes(b"\x08" + bytes(20)), [
        "import", "--model", "scnn2:4-4", "--weights", t / "w.safetensors", "--data", "digits", "--out", t / "i"])[1],
     "not a readable .safetensors"),
    ("import-weights-unknown-suffix", lambda t, b: ((t / "w.txt").write_text("1"), [
        "import", "--model", "scnn2:4-4", "--weights", t / "w.txt", "--data", "digits", "--out", t / "i"])[1],
     "must be a .pt"),
    ("import-without-data-or-shape", lambda t, b: ["import", "--model", "scnn2:8-16", "--weights",
                                                   t / RUN / "model.pt", "--out", t / "i"], "--shape C,H,W"),
    *[(f"train-imagefolder-{name}", lambda t, b, make=make: ["train", *TRAIN[:2], "--data", "imagefolder",
                                                            "--data-root", make(t), "--out", t / "r", "-q"], expected)
      for name, make, expected in (
          ("corrupt-image", lambda t: (image_folder(t / "f", 4), (t / "f" / "cat" / "x.png").write_bytes(b"no"))[0],
           "x.png: cannot read this image"),
          ("empty-class", lambda t: (image_folder(t / "f", 4), (t / "f" / "zebra").mkdir())[0], "zebra holds no"),
          ("mixed-sizes", lambda t: image_folder(t / "f", 4, size=lambda i: (8 + i, 8)), "declare the input shape"),
          ("empty-directory", lambda t: (t / "f").mkdir() or t / "f", "has 0 class folder(s)"),
          ("not-a-directory", lambda t: t / "missing", "is not a directory"))],
    *[(f"import-onnx-{name}", lambda t, b, make=make: (onnx.save_model(make(), str(t / "m.onnx")),
                                                       ["import", t / "m.onnx", "--out", t / "i"])[1], expected)
      for name, make, expected in (
          ("two-inputs", lambda: onnx_graph(["x", "z"], "Add", (1, 3, 4, 4)), "has 2 inputs"),
          ("not-an-image", lambda: onnx_graph(["x"], "Relu", (1, 48), (1, 48)), "takes float N×C×H×W"),
          ("dynamic-shape", lambda: onnx_graph(["x"], "Flatten", ("n", 3, "h", "w"), ("n", 48)), "dynamic axes"),
          ("unsupported-operator", lambda: onnx_graph(["x"], "Frobnicate", (1, 3, 4, 4), (1, 48), "acme"),
           "onnxruntime cannot open"))],
    ("import-onnx-corrupt", lambda t, b: ((t / "m.onnx").write_bytes(b"\x08\x07garbage"),
                                          ["import", t / "m.onnx", "--out", t / "i"])[1], "not a valid ONNX model"),
    ("train-npz-label-out-of-range", lambda t, b: (np.savez(t / "d.npz", x=np.zeros((8, 1, 4, 4), np.uint8),
                                                            y=[0, 1, 0, 1, 0, 1, 0, -4]),
                                                   ["train", *TRAIN[:2], "--data", "npz", "--data-root", t / "d.npz",
                                                    "--out", t / "r", "-q"])[1], "label -4 is out of range"),
]


def onnx_graph(inputs, op, dims, out_dims=None, domain=""):
    """A small ONNX graph for the import battery: `op` over `inputs`, float tensors of `dims`."""
    from onnx import TensorProto, helper

    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(dims)) for n in inputs]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_dims or dims))
    node = helper.make_node(op, inputs, ["y"], domain=domain)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph([node], "g", values, [out]), opset_imports=opsets)


def edit_run(run: Path, change) -> None:
    manifest = json.loads((run / "model.json").read_text())
    change(manifest)
    (run / "model.json").write_text(json.dumps(manifest))


def edit_bundle(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("setup,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(setup, expected, digits_run, bundle_source, tmp_path):
    shutil.copytree(digits_run.path, tmp_path / RUN)
    try:
        args = setup(tmp_path, bundle_source)
        before = snapshot(tmp_path)
        code, out, err = run_cli(*args)
        after = snapshot(tmp_path)
    finally:
        for path in (tmp_path / "ro", tmp_path / RUN):
            release(path)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and "Traceback" not in out + err, err
    assert lines[0].startswith("error:") and expected in lines[0], lines[0]
    assert after == before, sorted(set(after) ^ set(before)) or "a file's contents changed"


def test_report_on_a_malformed_robustness_file_leaves_no_png(digits_run, tmp_path):
    shutil.copytree(digits_run.path, tmp_path / RUN)
    (tmp_path / RUN / "robustness.json").write_text(json.dumps({"n": 5}))  # a dict missing its fields
    code, _, err = run_cli("report", tmp_path / RUN)
    assert code == 2 and "robustness" in err
    assert not list((tmp_path / RUN).rglob("*.png")) and not (tmp_path / RUN / "report.md").exists()


# -- fuzz: random bytes for every file the tool reads ---------------------------------------------------------------
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
payloads = st.one_of(st.binary(max_size=4096),
                     st.binary(max_size=2048).map(lambda b: b"PK\x03\x04" + b),  # a zip's magic, then noise
                     st.binary(max_size=512).map(lambda b: b"\x80\x02" + b))  # a pickle's header, then noise


def typed_or_ok(call) -> None:
    try:
        call()
    except EdgeRobustError as exc:
        assert "\n" not in str(exc).strip()


@pytest.fixture(scope="module")
def fuzz_dir(digits_run, bundle_source, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(digits_run.path, root / RUN)
    shutil.copytree(bundle_source, root / "bundle")
    return root


@FUZZ
@given(data=payloads)
def test_fuzz_checkpoint(fuzz_dir, data):
    from edgerobust.run import RunDir

    (fuzz_dir / RUN / "model.pt").write_bytes(data)
    typed_or_ok(lambda: RunDir.open(fuzz_dir / RUN).load_model())


@FUZZ
@given(data=st.one_of(st.binary(max_size=2048), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "spec", "input_shape", "num_classes", "format", "mean", "dataset", "train"]),
        inner, max_size=4), max_leaves=12).map(lambda obj: json.dumps(obj).encode())))
def test_fuzz_run_manifest(fuzz_dir, data, digits_run):
    from edgerobust.run import RunDir

    shutil.copy(digits_run.path / "model.pt", fuzz_dir / RUN / "model.pt")
    (fuzz_dir / RUN / "model.json").write_bytes(data)
    typed_or_ok(lambda: RunDir.open(fuzz_dir / RUN).load_model())


@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_robustness_file(fuzz_dir, data, digits_run):
    from edgerobust.report import render_report

    shutil.copy(digits_run.path / "model.json", fuzz_dir / RUN / "model.json")
    (fuzz_dir / RUN / "robustness.json").write_bytes(data)
    typed_or_ok(lambda: render_report(fuzz_dir / RUN))


@FUZZ
@given(name=st.sampled_from(["manifest.json", "golden_inputs.npy", "golden_outputs.npy", "model.onnx"]),
       data=st.binary(max_size=2048), resigned=st.booleans())
def test_fuzz_bundle_files(fuzz_dir, bundle_source, name, data, resigned):
    from edgerobust.export.bundle import verify_bundle

    bundle = fuzz_dir / "bundle"
    shutil.rmtree(bundle)
    shutil.copytree(bundle_source, bundle)
    if resigned and name != "manifest.json":
        resign(bundle, name, data)
    else:
        (bundle / name).write_bytes(data)
    typed_or_ok(lambda: verify_bundle(bundle, run_golden=True))


@FUZZ
@given(kind=st.sampled_from(["mnist", "mnist-header", "mnist-gz", "cifar10", "svhn", "imagefolder", "npz"]),
       data=st.binary(max_size=2048))
def test_fuzz_data_files(tmp_path_factory, kind, data):
    from edgerobust.data import load_dataset

    root = tmp_path_factory.mktemp("data")
    if kind.startswith("mnist"):
        images = idx((1, 28, 28), bytes(784))
        if kind == "mnist-header":
            data = bytes([0, 0, 8, 3]) + data
        (root / "t10k-labels-idx1-ubyte").write_bytes(idx((1,), b"\x03"))
        if kind == "mnist-gz":
            (root / "t10k-images-idx3-ubyte.gz").write_bytes(data if len(data) % 2 else gzip.compress(data))
        else:
            (root / "t10k-images-idx3-ubyte").write_bytes(data)
        del images
        name = "mnist"
    elif kind == "imagefolder":  # random bytes as one image (decoded streamed and in memory), the others sound
        image_folder(root / "f", 3, formats=("png",))
        good = (root / "f" / "cat" / "000.png").read_bytes()  # half the time a valid header, then random pixels
        (root / "f" / "cat" / "000.png").write_bytes(data if len(data) % 2 else good[:40] + data)
        typed_or_ok(lambda: [load_dataset("imagefolder", s, root / "f", shape=[3, 4, 4], stream=stream).images[:]
                             for s in ("train", "test") for stream in (True, False)])
        return
    elif kind == "npz":
        (root / "d.npz").write_bytes(data)
        name, root = "npz", root / "d.npz"
    elif kind == "cifar10":
        (root / "cifar-10-batches-py").mkdir()
        (root / "cifar-10-batches-py" / "test_batch").write_bytes(data)
        name = "cifar10"
    else:
        (root / "test_32x32.mat").write_bytes(data)
        name = "svhn"
    typed_or_ok(lambda: load_dataset(name, "test", root))


def test_a_directory_named_like_a_profile_is_named_not_skipped_silently(tmp_path, monkeypatch):
    (tmp_path / "devices" / "board.toml").mkdir(parents=True)
    monkeypatch.setenv("EDGEROBUST_DEVICES", str(tmp_path / "devices"))
    code, out, err = run_cli("devices", "list")
    assert code == 0 and "jetson-nano" in out  # the other profiles still list
    bare = "".join(out.split())  # rich wraps the long path wherever the terminal width falls
    assert "board.toml:notafile" in bare and "renameorremoveit" in bare
