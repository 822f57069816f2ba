"""Certification over many points under torchrun (certify/shard.py): two ranks write the certificates.json one
process writes, and shares of the points certified apart merge into the whole's results."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgerobust.bounds import ARITHMETIC_MODELS, Engine, from_onnx
from edgerobust.bounds.rules import SLACK
from edgerobust.certify.shard import certify_share, merge
from edgerobust.config import ExportConfig
from edgerobust.export.api import export_run


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("shard") / "run"
    shutil.copytree(digits_run.path, run)
    bundle = export_run(run, ExportConfig(target="jetson-nano", fp16=False, calibration=0, golden=8),
                        progress=False).bundle
    return run, bundle


def comparable(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("seconds", "sharded", "bundle")}  # (paths differ)


def same(a, b) -> bool:
    """Equal documents, floats up to the engine's own float64 slack (SLACK: its allowance for its summation order,
    which BLAS may choose by batch size and threads) and one unit of the ninth digit certificates.json writes."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= (1e-8 + SLACK) * max(abs(a), abs(b))
    return a == b and type(a) is type(b)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.isnan(a), np.isnan(b)) and bool(np.all(np.abs(a - b)[~np.isnan(a)] <= SLACK * np.abs(
        a)[~np.isnan(a)]))


def test_torchrun_two_ranks_write_what_one_process_writes(exported, tmp_path):
    run, _ = exported
    args = ["certify", "--eps", "0.01,0.03", "--method", "crown", "--points", "5", "--precision", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEROBUST_PROGRESS": "0"}
    docs = {}
    for name, launcher in (("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node", "2", "--module", "edgerobust"]),
                           ("one", [sys.executable, "-m", "edgerobust"])):
        copy = tmp_path / name
        shutil.copytree(run, copy)
        done = subprocess.run([*launcher, args[0], str(copy), *args[1:]], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (name, done.stdout[-3000:], done.stderr[-3000:])  # say why
        docs[name] = json.loads((copy / "certificates.json").read_text())
        if name == "ddp":
            assert done.stdout.count("certificates (crown") == 1  # rank 0 alone prints
    assert docs["ddp"]["sharded"] == {"world_size": 2, "backend": "gloo"} and "sharded" not in docs["one"]
    assert same(comparable(docs["ddp"]), comparable(docs["one"]))
    manifest = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert manifest["certify"]["sharded"]["world_size"] == 2


@pytest.mark.parametrize("peck_mode", [None, "sound"])
def test_shares_of_the_points_merge_into_the_whole(exported, peck_mode):
    _, bundle = exported
    engine = Engine(from_onnx(onnx.load(bundle / "model.onnx")))
    x = np.load(bundle / "golden_inputs.npy")[:4].astype(np.float64)
    y = np.load(bundle / "golden_labels.npy")[:4].astype(np.int64)
    models = [ARITHMETIC_MODELS.get("real"), ARITHMETIC_MODELS.get("fp32")]
    method = "peck" if peck_mode else "crown"
    settings = dict(eps=[0.01], norm="inf", method=method, models=models, budget=1 << 28, radius=False,
                    peck_mode=peck_mode, peck_attacks=("deepfool",))
    whole = certify_share(engine, x, y, **settings)
    shares = [certify_share(engine, x[s], y[s], **settings) for s in (slice(0, 3), slice(3, 3), slice(3, 4))]
    parts = merge(shares)
    assert np.array_equal(parts.predicted, whole.predicted)
    for a, b in zip(parts.certs, whole.certs, strict=True):
        assert a.vacuous == b.vacuous
        for m in ("real", "fp32"):
            assert np.array_equal(a.certified[m], b.certified[m])
            assert close(a.bounds[m], b.bounds[m])
            for k in (0, 1):
                assert close(a.intervals[m][k], b.intervals[m][k])
    assert parts.radii == whole.radii == {}  # (radii: the torchrun test compares them)
    if peck_mode:
        assert close(parts.peck["kappa"], whole.peck["kappa"])
        # the attacks' minima are searches, not bounds: DeepFool's float64 steps may round apart with the batch, so
        # only where it succeeded must agree; the merge itself keeps each share's values
        assert np.array_equal(parts.peck["found"], np.concatenate([p.peck["found"] for p in shares if p.peck]))
        assert np.array_equal(np.isnan(parts.peck["found"]), np.isnan(whole.peck["found"]))
