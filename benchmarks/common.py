"""Shared by the benchmark scripts: how a measurement was taken, and where results go."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import torch

from edgerobust.io import write_json
from edgerobust.versions import machine_info, package_versions

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    return {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "versions": package_versions()}


def save_result(name: str, result: dict[str, Any]) -> Path:
    path = write_json(RESULTS / f"{name}.json", {"benchmark": name, "environment": environment(), **result})
    print(f"wrote {path}")
    return path
