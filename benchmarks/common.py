"""Shared by the benchmark scripts: how a measurement was taken, and where results go."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from edgerobust.io import write_json
from edgerobust.versions import machine_info, package_versions

RESULTS = Path(__file__).resolve().parent / "results"
REPOSITORY = Path(__file__).resolve().parents[1]


def git_commit(root: Path = REPOSITORY) -> dict[str, Any]:
    """The commit the measurement ran on and whether tracked files differed from it (results/ aside), or why not."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "stderr", "") or str(exc)
        return {"commit": None, "why": f"not a git checkout or no git here ({reason.strip().splitlines()[0]})"}
    return {"commit": commit, "dirty": bool(changed)}


# read when a benchmark script starts, so edits made while it runs are not mistaken for the code it measured
MEASURED_COMMIT = git_commit()


def environment() -> dict[str, Any]:
    return {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": MEASURED_COMMIT,
            "machine": machine_info(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "versions": package_versions()}


def digits_model(epochs: int = 15) -> torch.nn.Module:
    """The benchmarks' small edge model: scnn2:16-32 trained naturally on the built-in digits (seed 0)."""
    from edgerobust.training import TrainConfig
    from edgerobust.training.api import train_model

    with tempfile.TemporaryDirectory() as tmp:
        run = train_model(Path(tmp) / "run", "scnn2:16-32", "digits",
                          TrainConfig(epochs=epochs, batch_size=64, lr=0.05, augment=False), progress=False)
        return run.load_model()


def save_result(name: str, result: dict[str, Any]) -> Path:
    path = write_json(RESULTS / f"{name}.json", {"benchmark": name, "environment": environment(), **result})
    print(f"wrote {path}")
    return path
