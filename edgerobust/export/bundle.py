"""The deployment bundle: a directory a device can run from with numpy + onnxruntime/tensorrt (no torch).

    model.onnx, model.fp16.onnx, profile.json, golden_inputs.npy, golden_outputs.npy, golden_labels.npy,
    golden_tolerance.<precision>.npy (derived per-logit bounds, export/tolerance.py), calibration.npz,
    manifest.json  (sha256 and size of every other file)

It is assembled in a hidden sibling directory and renamed into place at the end, so a failed export leaves no
half-written bundle; `verify_bundle` detects a changed, missing or added file. Every reader goes through
`seal.check_bundle` first (no links, special files or escaping manifest paths), and so does the staged bundle before
it is published.
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

from ..claim import check_output, pid_alive
from ..errors import EdgeRobustError
from ..io import atomic_path, sha256_file, write_json
from ..runner.precisions import PRECISIONS
from .seal import MANIFEST_NAME, BundleError, SealError, check_bundle, scan_tree

BUNDLE_FORMAT = "edgerobust-bundle-1"
__all__ = ["BUNDLE_FORMAT", "MANIFEST_NAME", "BundleError", "check_writable", "file_table", "read_manifest",
           "save_array", "staging", "verify_bundle", "write_manifest"]


def check_writable(out: Path) -> None:
    """Fail before any work when `out` cannot be created: the nearest existing ancestor must be a writable dir."""
    if out.is_symlink():
        raise EdgeRobustError(f"{out} is a symbolic link; a bundle is written only as a plain directory, "
                              "choose another --out")
    check_output(out)
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
        try:  # export publishes only regular files and directories, named inside the bundle
            yield stage
            check_bundle(stage)
        except SealError as exc:
            raise SealError(f"not published: {str(exc).replace(str(stage), str(out))}") from None
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


def file_table(directory: Path, files: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """sha256 and size of every regular file but the manifest (`files`: the names `scan_tree` found, if known)."""
    names = scan_tree(directory) if files is None else files
    return {name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
            for name in names if name != MANIFEST_NAME}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in `directory` into the manifest and write it (last, so it vouches for what is there)."""
    manifest = {"format": BUNDLE_FORMAT, **manifest, "files": file_table(directory)}
    write_json(directory / MANIFEST_NAME, manifest)
    return manifest


def _check_format(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    if manifest.get("format") != BUNDLE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{bundle / MANIFEST_NAME} is not an edgerobust bundle manifest")
    models = manifest.get("models") or {}
    if not isinstance(models, dict):
        raise BundleError(f"{bundle / MANIFEST_NAME}: models must map a precision to its model; re-export")
    for name, entry in manifest["files"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise BundleError(f"{bundle / MANIFEST_NAME}: the files entry {name!r} needs a sha256; the manifest is "
                              "damaged, re-export the bundle")
    for precision, entry in models.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise BundleError(f"{bundle / MANIFEST_NAME}: models.{precision} names no model file; re-export")
        parity = entry.get("parity")
        if not (isinstance(parity, dict) and isinstance(parity.get("tolerance"), (int, float))):
            raise BundleError(f"{bundle / MANIFEST_NAME}: models.{precision} has no parity tolerance; the manifest "
                              "is damaged, re-export the bundle")
    return manifest


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """The manifest of a sealed bundle (checked by `seal.check_bundle` before it is returned)."""
    bundle = Path(bundle)
    return _check_format(bundle, check_bundle(bundle).manifest)


def verify_bundle(bundle: str | Path, run_golden: bool = False) -> dict[str, Any]:
    """Seal check, then every file against its sha256 (and that none was added); optionally re-run the golden inputs."""
    bundle = Path(bundle)
    sealed = check_bundle(bundle)
    manifest = _check_format(bundle, sealed.manifest)
    expected = manifest["files"]
    actual = file_table(bundle, sealed.files)
    for name, entry in expected.items():
        if name not in actual:
            raise BundleError(f"bundle {bundle}: {name} is missing; re-export the bundle")
        if not isinstance(entry, dict) or actual[name]["sha256"] != entry.get("sha256"):
            raise BundleError(f"bundle {bundle}: {name} has been modified (sha256 differs from the manifest); "
                              "re-export the bundle")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise BundleError(f"bundle {bundle}: {extra[0]} is not listed in the manifest; remove it or re-export")
    result: dict[str, Any] = {"bundle": str(bundle), "files": len(expected), "sha256": "ok"}
    if run_golden:
        result["golden"] = check_golden(bundle, manifest)
    return result


def save_golden_tolerances(directory: Path, proto: Any, inputs: np.ndarray, precisions: list[str],
                           reference: np.ndarray | None = None) -> dict[str, Any]:
    """Derive each precision's golden tolerance (export/tolerance.py) and save it beside the golden outputs.

    `reference`: the golden model's float64 outputs (see `golden_tolerances`).

    Returns the manifest entry per precision: `{"file", "max", "kind", "rule", "reference"}`, or with `file` None
    where no finite bound exists (the outputs are then checked for finiteness only).
    """
    from .tolerance import DECISION_RULE, REFERENCE, golden_tolerances

    entries = {}
    for precision, bound in golden_tolerances(proto, inputs, precisions, reference).items():
        entry: dict[str, Any] = {"kind": "derived forward error bound (absolute, per logit, vs golden outputs)",
                                 "rule": DECISION_RULE, "reference": REFERENCE}
        if bound is None:
            entry.update(file=None, max=None, note="no finite bound (n*u >= 1 or possible overflow)")
        else:
            name = PRECISIONS[precision].file_name("tolerance")
            save_array(directory / name, bound.astype(np.float64))
            entry.update(file=name, max=float(bound.max()))
        entries[precision] = entry
    return entries


def golden_tolerance_of(bundle: Path, entry: dict[str, Any]) -> np.ndarray | None:
    """The derived per-logit tolerance a manifest model entry names (None: unbounded)."""
    info = entry.get("golden_tolerance") or {}
    return _load_array(bundle, info["file"]) if info.get("file") else None


def check_golden(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Run every ONNX model in the bundle on the golden inputs with onnxruntime and compare with the outputs.

    Where the manifest records a derived tolerance (export/tolerance.py) every logit must lie within its bound and a
    decision may differ only near the boundary; older bundles fall back to their parity tolerance.
    """
    from ..runner.parity import agreement
    from .parity import compare, ort_session, run_onnx
    from .tolerance import compare_with_tolerance

    names = manifest.get("golden") or {}
    if not isinstance(names, dict):
        raise BundleError(f"bundle {bundle}: manifest field 'golden' must be a table; re-export the bundle")
    for key in ("inputs", "outputs"):
        if not isinstance(names.get(key, ""), str):
            raise BundleError(f"bundle {bundle}: manifest field golden.{key} must be a file name, not "
                              f"{type(names[key]).__name__}; re-export the bundle")
    inputs = _load_array(bundle, names.get("inputs", "golden_inputs.npy"))
    golden = _load_array(bundle, names.get("outputs", "golden_outputs.npy"))
    if inputs.ndim < 2 or golden.ndim != 2 or len(inputs) != len(golden):
        raise BundleError(f"bundle {bundle}: golden inputs {inputs.shape} and golden outputs {golden.shape} "
                          "are not a batch of inputs and its logits; re-export the bundle")
    figures = {}
    for precision, entry in manifest.get("models", {}).items():
        try:
            outputs = run_onnx(ort_session(bundle / entry["file"]), inputs)
        except EdgeRobustError:
            raise
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types for a damaged model or input)
            raise BundleError(f"bundle {bundle}: {entry['file']} cannot be run on the golden inputs "
                              f"({type(exc).__name__}); re-export the bundle") from None
        if "golden_tolerance" in entry:
            try:
                got = compare_with_tolerance(outputs, golden, golden_tolerance_of(bundle, entry))
            except ValueError as exc:  # a tolerance array of another shape than the golden outputs
                raise BundleError(f"bundle {bundle}: models.{precision}.golden_tolerance: {exc}; re-export the "
                                  "bundle") from None
            if not got["passed"]:
                raise BundleError(f"bundle {bundle}: {entry['file']} no longer reproduces the golden outputs within "
                                  f"the derived tolerance ({got.get('logits_beyond_bound', 0)} logits beyond their "
                                  f"bound, {got.get('decisions_differing_not_allowed', 0)} decisions changed away "
                                  "from the boundary); re-export the bundle")
            figures[precision] = got
            continue
        parity = entry.get("parity") or {}
        rule = PRECISIONS[precision].parity if precision in PRECISIONS else None
        if rule == "agreement" and "min_top1_agreement" in parity:
            labels = _load_array(bundle, names.get("labels", "golden_labels.npy"))
            got = agreement(outputs, golden, labels, parity["min_top1_agreement"],
                            parity.get("max_accuracy_drop", 1.0))
            if not got["passed"]:
                raise BundleError(f"bundle {bundle}: {entry['file']} ({precision}) no longer agrees with the "
                                  f"golden outputs: accuracy {got['accuracy']:.2%} against fp32 "
                                  f"{got['reference_accuracy']:.2%}, top-1 agreement {got['top1_agreement']:.3f} "
                                  "(at least "
                                  f"{got['min_top1_agreement']:g}, drop at most {got['max_accuracy_drop']:g}); "
                                  "re-export the bundle")
            figures[precision] = {**compare(golden, outputs), **got}
            continue
        got = compare(golden, outputs)
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
