"""The deployment bundle: a directory a device can run from with numpy + onnxruntime/tensorrt (no torch).

    model.onnx, model.fp16.onnx, profile.json, golden_inputs.npy, golden_outputs.npy, golden_labels.npy,
    calibration.npz, manifest.json  (sha256 and size of every other file)

It is assembled in a hidden sibling directory and renamed into place at the end, so a failed export leaves no
half-written bundle; `verify_bundle` detects a changed, missing or added file.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..claim import pid_alive
from ..errors import EdgeRobustError
from ..io import atomic_path, read_json, sha256_file, write_json

BUNDLE_FORMAT = "edgerobust-bundle-1"
MANIFEST_NAME = "manifest.json"


class BundleError(EdgeRobustError):
    """A bundle that is missing, incomplete or has been changed since it was written."""


def check_writable(out: Path) -> None:
    """Fail before any work when `out` cannot be created: the nearest existing ancestor must be a writable dir."""
    if out.exists() and not out.is_dir():
        raise EdgeRobustError(f"{out} exists and is not a directory; choose another --out")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise EdgeRobustError(f"cannot write the bundle to {out}: {ancestor} is not a directory; choose another --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise EdgeRobustError(f"cannot write the bundle to {out}: {ancestor} is not writable; choose another --out")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise EdgeRobustError(f"{out} is not empty and is not an edgerobust bundle; choose another --out")


@contextlib.contextmanager
def staging(out: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces `out` (an earlier bundle there is replaced)."""
    out = Path(out)
    check_writable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_stages(out)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise EdgeRobustError(f"cannot write the bundle to {out}: {exc.strerror}; choose another --out") from None
    try:
        yield stage
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def remove_stale_stages(out: Path) -> list[Path]:
    """Remove staging (`.NAME.PID.*.partial`) and replaced (`.NAME.old-PID`) directories of `out` whose owner
    process is gone: what a killed export leaves behind. A live export's directories are left alone."""
    removed = []
    for path in out.parent.glob(f".{glob.escape(out.name)}.*"):
        rest = path.name[len(out.name) + 2:]
        if rest.endswith(".partial"):
            pid = rest.split(".", 1)[0]
        elif rest.startswith("old-"):
            pid = rest[4:]
        else:
            continue
        if path.is_dir() and not path.is_symlink() and not (pid.isdigit() and pid_alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def save_array(path: Path, array: np.ndarray) -> Path:
    """.npy in format 1.0, which numpy 1.19 on a Jetson Nano reads."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array(handle, np.ascontiguousarray(array), version=(1, 0), allow_pickle=False)
    return path


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    return {str(p.relative_to(directory)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in `directory` into the manifest and write it (last, so it vouches for what is there)."""
    manifest = {"format": BUNDLE_FORMAT, **manifest, "files": file_table(directory)}
    write_json(directory / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle} does not exist; create it with `edgerobust export`")
    if not (bundle / MANIFEST_NAME).is_file():
        raise BundleError(f"{bundle} is not a bundle (no {MANIFEST_NAME})")
    manifest = read_json(bundle / MANIFEST_NAME)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or "files" not in manifest:
        raise BundleError(f"{bundle / MANIFEST_NAME} is not an edgerobust bundle manifest")
    check_manifest_shape(manifest, bundle / MANIFEST_NAME)
    return manifest


def check_manifest_shape(manifest: dict[str, Any], where: Path) -> None:
    """files: {name: {sha256, bytes}}, models: {precision: {file, parity}}, every name a plain relative path."""
    def bad(what: str) -> BundleError:
        return BundleError(f"{where}: {what}; the manifest is damaged, re-export the bundle")

    files = manifest["files"]
    if not isinstance(files, dict):
        raise bad("'files' must be a table of file name -> sha256 and size")
    for name, entry in files.items():
        if not _plain_name(name) or not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise bad(f"the files entry {name!r} needs a plain relative name and a sha256")
    models = manifest.get("models", {})
    if not isinstance(models, dict):
        raise bad("'models' must be a table of precision -> model file")
    for precision, entry in models.items():
        parity = entry.get("parity") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and _plain_name(entry["file"])
                and isinstance(parity, dict) and isinstance(parity.get("tolerance"), (int, float))):
            raise bad(f"the model entry {precision!r} needs a plain file name and its parity tolerance")


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts


def verify_bundle(bundle: str | Path, run_golden: bool = False) -> dict[str, Any]:
    """Check every file against its sha256 (and that none was added); optionally re-run the golden inputs."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    expected = manifest["files"]
    actual = file_table(bundle)
    for name, entry in expected.items():
        if name not in actual:
            raise BundleError(f"bundle {bundle}: {name} is missing; re-export the bundle")
        if actual[name]["sha256"] != entry["sha256"]:
            raise BundleError(f"bundle {bundle}: {name} has been modified (sha256 differs from the manifest); "
                              "re-export the bundle")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise BundleError(f"bundle {bundle}: {extra[0]} is not listed in the manifest; remove it or re-export")
    result: dict[str, Any] = {"bundle": str(bundle), "files": len(expected), "sha256": "ok"}
    if run_golden:
        result["golden"] = check_golden(bundle, manifest)
    return result


def check_golden(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Run every ONNX model in the bundle on the golden inputs with onnxruntime and compare with the outputs."""
    from .parity import compare, ort_session, run_onnx

    inputs, golden = _load_array(bundle, "golden_inputs.npy"), _load_array(bundle, "golden_outputs.npy")
    if inputs.ndim != 4 or golden.ndim != 2 or len(inputs) != len(golden):
        raise BundleError(f"bundle {bundle}: golden_inputs.npy {inputs.shape} and golden_outputs.npy {golden.shape} "
                          "are not a batch of inputs and its logits; re-export the bundle")
    figures = {}
    for precision, entry in manifest.get("models", {}).items():
        try:
            got = compare(golden, run_onnx(ort_session(bundle / entry["file"]), inputs))
        except EdgeRobustError:
            raise
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types for a damaged model or input)
            raise BundleError(f"bundle {bundle}: {entry['file']} cannot be run on the golden inputs "
                              f"({type(exc).__name__}); re-export the bundle") from None
        tolerance = entry["parity"]["tolerance"]
        measured = got["max_rel_diff"] if entry["parity"]["tolerance_kind"] == "relative" else got["max_abs_diff"]
        if measured > tolerance:
            raise BundleError(f"bundle {bundle}: {entry['file']} no longer reproduces the golden outputs "
                              f"(difference {measured:.3g} > {tolerance:g})")
        figures[precision] = got
    return figures


def _load_array(bundle: Path, name: str) -> np.ndarray:
    try:
        array = np.load(bundle / name, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BundleError(f"bundle {bundle}: {name} is not a readable .npy array ({str(exc)[:80]}); "
                          "re-export the bundle") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise BundleError(f"bundle {bundle}: {name} is not a numeric array; re-export the bundle")
    return array
