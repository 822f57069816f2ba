"""Versions of the packages that shape a result, recorded in every manifest."""
from __future__ import annotations

import platform
from importlib import metadata

TRACKED = ("edgerobust", "torch", "numpy", "onnx", "onnxruntime", "onnxslim", "torch-pruning", "scikit-learn",
           "scipy", "tensorrt")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict[str, object]:
    import os

    import psutil

    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "logical_cpus": os.cpu_count(), "physical_cpus": psutil.cpu_count(logical=False),
            "memory_bytes": psutil.virtual_memory().total}
