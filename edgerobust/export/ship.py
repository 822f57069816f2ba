"""What a bundle carries besides the model: the device runner (edgerobust/runner) and the run's replay sets.

The runner's own .py files go to `edgerobust_runner/` (so `python3 BUNDLE/edgerobust_runner/run.py` works on the
device, docs/runner-protocol.md); adversarial sets saved by `evaluate` (RUN/adversarial/<key>.npz, the shared
format) go to `replay/<key>.npz`. Only regular files are copied; the manifest lists and hashes them like the rest.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeRobustError
from ..runner import PACKAGE_DIR_IN_BUNDLE, PROTOCOL, RUNNER_VERSION, runner_files

REPLAY_DIR = "replay"


def ship_runner(stage: Path) -> dict[str, Any]:
    """Copy the runner package into the bundle; return the manifest's `runner` section."""
    target = stage / PACKAGE_DIR_IN_BUNDLE
    target.mkdir()
    names = []
    for name, source in runner_files():
        shutil.copyfile(source, target / name)
        names.append(f"{PACKAGE_DIR_IN_BUNDLE}/{name}")
    return {"dir": PACKAGE_DIR_IN_BUNDLE, "version": RUNNER_VERSION, "protocol": PROTOCOL, "files": names,
            "invoke": f"python3 {PACKAGE_DIR_IN_BUNDLE}/run.py COMMAND --bundle ."}


def ship_replay_sets(run_path: Path, stage: Path, input_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """Copy the run's adversarial sets (checked: regular files, x_adv/labels of the model's shape) into replay/."""
    source_dir = run_path / "adversarial"
    if not source_dir.is_dir() or source_dir.is_symlink():
        return None
    sets: dict[str, Any] = {}
    for source in sorted(source_dir.glob("*.npz")):
        if source.is_symlink() or not source.is_file():
            raise EdgeRobustError(f"{source} is not a regular file; a bundle carries regular files only")
        try:
            with np.load(source, allow_pickle=False) as data:
                x, labels = data["x_adv"], data["labels"]
                count, has_robust = len(labels), "robust" in data.files
        except (OSError, ValueError, KeyError) as exc:
            raise EdgeRobustError(f"{source} is not an adversarial set (x_adv, labels): {exc}; re-run evaluate") \
                from None
        if x.dtype != np.float32 or tuple(x.shape[1:]) != tuple(input_shape) or len(x) != count:
            raise EdgeRobustError(f"{source}: x_adv is {x.dtype} {x.shape}, not float32 N×{input_shape}; "
                                  "re-run evaluate")
        (stage / REPLAY_DIR).mkdir(exist_ok=True)
        shutil.copyfile(source, stage / REPLAY_DIR / source.name)
        sets[source.stem] = {"file": f"{REPLAY_DIR}/{source.name}", "count": count, "host_robust": has_robust}
    return sets or None
