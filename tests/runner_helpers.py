"""Helpers for the device-runner tests: run a command in-process or as a program, copy and re-seal bundles."""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgerobust.runner.main import main

RUNNER_DIR = Path(__file__).resolve().parents[1] / "edgerobust" / "runner"


def run_runner(*argv, key_source=None):
    """(exit code, parsed JSON document) of one runner command, in this process."""
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out, key_source=key_source)
    text = out.getvalue()
    assert text.count("\n") == 1, text  # exactly one JSON document
    return code, json.loads(text)


def run_program(python, bundle, *argv, stdin=None, timeout=300):
    """(exit code, JSON document) of `python BUNDLE/edgerobust_runner/run.py ARGV...` as a separate process."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # the runner needs neither
    done = subprocess.run([str(python), str(Path(bundle) / "edgerobust_runner" / "run.py"), *map(str, argv)],
                          input=stdin, capture_output=True, timeout=timeout, env=env)
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, (done.stdout, done.stderr[-2000:])
    return done.returncode, json.loads(lines[0])


def error_kind(argv, expected_kind, key_source=None):
    code, doc = run_runner(*argv, key_source=key_source)
    assert code == 2 and doc["ok"] is False, doc
    assert doc["error"]["kind"] == expected_kind, doc["error"]
    assert "\n" not in doc["error"]["message"]
    return doc["error"]["message"]


def copy_bundle(bundle, tmp_path):
    target = Path(tmp_path) / "bundle"
    shutil.copytree(bundle, target)
    return target


def reseal(bundle, changes=None):
    """Re-hash every listed file into manifest.json after a test changed files (and apply `changes` to it)."""
    manifest_path = Path(bundle) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    (changes or (lambda m: None))(manifest)
    for name, entry in manifest["files"].items():
        path = Path(bundle) / name
        if path.is_file() and not path.is_symlink():
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            entry["bytes"] = path.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    return manifest


def python_executable():
    return sys.executable


def run_with_replay_set(source, directory: Path, n: int):
    """A copy of run `source` in `directory`/run with one PGD set (ε = 0.1, 5 steps) on its first n test points saved
    in RUN/adversarial, in the format `evaluate` writes: what an export ships for the device's replay."""
    import numpy as np
    import torch

    from edgerobust.attacks.base import get_attack
    from edgerobust.data import load_dataset
    from edgerobust.run import RunDir

    path = Path(directory) / "run"
    shutil.copytree(source.path, path)
    run = RunDir.open(path)
    model = run.load_model().eval()
    test = load_dataset("digits", "test", None)
    x, y = test.images[:n], test.labels[:n]
    x_adv = get_attack("pgd", eps=0.1, steps=5, seed=0)(model, x, y)
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).numpy()
    (path / "adversarial").mkdir()
    np.savez(path / "adversarial" / "pgd-0.1.npz", x_adv=x_adv.numpy().astype(np.float32),
             labels=y.numpy().astype(np.int64), indices=np.arange(n, dtype=np.int64), robust=robust)
    return run
