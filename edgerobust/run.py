"""Run directories: `model.pt` + `model.json` manifest; every later command reads and extends one."""
from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, EdgeRobustError
from .io import load_torch, read_json, save_torch, sha256_file, write_json
from .versions import package_versions

MANIFEST_NAME = "model.json"
WEIGHTS_NAME = "model.pt"
CHECKPOINT_NAME = "checkpoint.pt"
MANIFEST_FORMAT = "edgerobust-run-1"
BUNDLE_MANIFEST = "manifest.json"  # export/bundle.py's; named here so that runs find their bundles importing nothing


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """A directory holding one model and everything computed from it."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest

    # -- opening --------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, command: str | None = None) -> RunDir:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise EdgeRobustError(f"{path} exists and is not a directory; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        manifest = {"format": MANIFEST_FORMAT, "created": now(), "command": command or " ".join(sys.argv),
                    "versions": package_versions(), "parents": [], "artifacts": {}}
        return cls(path, manifest)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        path = Path(path)
        if not path.is_dir():
            raise EdgeRobustError(f"run directory {path} does not exist; create one with `edgerobust train`")
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise EdgeRobustError(f"{path} is not an edgerobust run directory (no {MANIFEST_NAME}); "
                                  "create one with `edgerobust train`")
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or "model" not in manifest:
            raise EdgeRobustError(f"{manifest_path} is not an edgerobust run manifest")
        check_model_info(manifest["model"], manifest_path)
        for section in ("dataset", "metrics", "training", "artifacts"):
            if section in manifest and not isinstance(manifest[section], dict):
                raise EdgeRobustError(f"{manifest_path}: '{section}' must be a table, got "
                                      f"{type(manifest[section]).__name__}; restore the run's model.json")
        return cls(path, manifest)

    # -- files ------------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def weights_path(self) -> Path:
        return self.file(WEIGHTS_NAME)

    @property
    def checkpoint_path(self) -> Path:
        return self.file(CHECKPOINT_NAME)

    def save_manifest(self) -> None:
        self.manifest["updated"] = now()
        write_json(self.file(MANIFEST_NAME), self.manifest)

    def update(self, section: str, value: Any) -> None:
        """Set one manifest section (e.g. 'robustness', 'export') and write the manifest atomically."""
        self.manifest[section] = value
        self.save_manifest()

    def record_artifact(self, name: str, path: str | Path, **info: Any) -> dict[str, Any]:
        path = Path(path)
        entry = {"path": str(path.relative_to(self.path) if path.is_relative_to(self.path) else path),
                 "sha256": sha256_file(path), "bytes": path.stat().st_size, "created": now(), **info}
        self.manifest.setdefault("artifacts", {})[name] = entry
        self.save_manifest()
        return entry

    def add_parent(self, other: RunDir, role: str = "parent") -> None:
        entry = {"role": role, "path": str(other.path), "model": other.manifest.get("model", {}).get("spec")}
        if other.weights_path.is_file():
            entry["sha256"] = sha256_file(other.weights_path)
        self.manifest.setdefault("parents", []).append(entry)

    # -- the model --------------------------------------------------------------------------------------------
    def save_model(self, model: nn.Module, model_info: dict[str, Any], **sections: Any) -> None:
        """Write weights then manifest; `model_info` = spec, input_shape, num_classes, mean, std."""
        # CPU tensors whatever device the model computed on: the same weights give the same file and sha256
        save_torch(self.weights_path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        self.manifest["model"] = dict(model_info)
        self.manifest.update(sections)
        self.manifest["weights_sha256"] = sha256_file(self.weights_path)
        self.save_manifest()

    def load_model(self) -> nn.Module:
        from .models import ModelImportError, build_model
        from .models.external import recorded
        from .models.resize import resize_to_state_dict

        info = self.manifest["model"]
        if info.get("format") == "onnx":
            return self._load_onnx(info)
        state = load_torch(self.weights_path)
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.weights_path} does not hold a state dict")
        source = info.get("source") or {}
        try:
            model = build_model(info["spec"], info["input_shape"], info["num_classes"], info.get("mean"),
                                info.get("std"), check_shape=False, kwargs=source.get("kwargs"),
                                activation=info.get("activation"), pca=info.get("pca"))
        except ModelImportError as exc:  # the user's model no longer imports or builds here
            raise ModelImportError(f"{self.path}: cannot rebuild its model: {exc}; {recorded(source)}") from None
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise CheckpointError(f"{self.weights_path} does not hold a state dict of named tensors")
        try:
            if info.get("physically_pruned"):
                resize_to_state_dict(model, state)
            model.load_state_dict(state)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise CheckpointError(f"{self.weights_path} does not fit model '{info['spec']}' "
                                  f"(a checkpoint for another architecture? {detail})") from None
        model.eval()
        return model

    def _load_onnx(self, info: dict[str, Any]) -> nn.Module:
        """An imported ONNX graph: converted to PyTorch where the import found the conversion exact, else run by
        onnxruntime behind an nn.Module (no gradients)."""
        from .models.onnx_model import ConversionUnavailable, OnnxClassifier, convert_to_torch

        path = self.file(str(info.get("file") or "model.onnx"))
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the run's model is that ONNX file; restore it or import again")
        if (info.get("source") or {}).get("torch_conversion", {}).get("available"):
            try:
                return convert_to_torch(path)
            except ConversionUnavailable:
                pass  # the converter went away since the import: the graph still runs in onnxruntime
        return OnnxClassifier(path, "input", "logits").eval()

    @property
    def is_onnx(self) -> bool:
        """The run's model is an imported ONNX file (no PyTorch weights to train or prune)."""
        return self.manifest.get("model", {}).get("format") == "onnx"

    # -- what the run used and made: its dataset, its bundles ---------------------------------------------------
    @property
    def dataset_name(self) -> str | None:
        """The dataset the run was trained on (None when the manifest does not record one)."""
        data = self.manifest.get("dataset", {})
        for split in ("train", "test"):
            record = data.get(split)
            if isinstance(record, dict) and isinstance(record.get("name"), str) and record["name"]:
                return record["name"]
        return None

    @property
    def data_root(self) -> str | None:
        """The directory the run's on-disk dataset was read from (None: the dataset's default)."""
        return self.manifest.get("dataset", {}).get("root") or None

    @property
    def data_options(self) -> dict[str, Any]:
        """The options the run's dataset was read with ([data] options: an image folder's size, an array file's
        keys; {} when none)."""
        options = self.manifest.get("dataset", {}).get("options")
        return dict(options) if isinstance(options, dict) else {}

    def relative(self, path: str | Path) -> str:
        """`path` as recorded in the manifest: relative to the run directory, so the record holds from any working
        directory and when run and bundles move together."""
        return os.path.relpath(Path(path).resolve(), self.path.resolve())

    def locate(self, recorded: str | Path) -> Path | None:
        """A directory the manifest records, wherever this command runs: relative to the run directory (how exports
        record bundles), else as written (older records, relative to where they were made), else the same name in or
        beside the run directory (the run moved). None when none of them is there."""
        recorded = Path(recorded)
        for candidate in (self.path / recorded, recorded, self.path / recorded.name, self.path.parent / recorded.name):
            if candidate.is_dir():
                return candidate
        return None

    def exports(self) -> dict[str, dict[str, Any]]:
        """The export records by target (those naming a bundle)."""
        exports = self.manifest.get("export")
        if not isinstance(exports, dict):
            return {}
        return {t: e for t, e in exports.items() if isinstance(e, dict) and isinstance(e.get("bundle"), str)}

    def bundle(self, target: str) -> Path | None:
        """The bundle exported for `target`, found by `locate`; None when there is none (or it is gone)."""
        entry = self.exports().get(target)
        return None if entry is None else self.locate(entry["bundle"])

    def latest_bundle(self) -> Path:
        """The most recently exported bundle; exports in the same second (the manifest keeps seconds) are ordered by
        their bundle manifest's mtime. An error saying what to do when there is none."""
        entries = self.exports()
        if not entries:
            raise EdgeRobustError(f"run {self.path} has no export bundle; make one with `edgerobust export` "
                                  "or pass BUNDLE")
        found = [(str(e.get("created", "")), path) for e in entries.values()
                 if (path := self.locate(e["bundle"])) is not None]
        if not found:
            latest = max(entries.values(), key=lambda e: str(e.get("created", "")))["bundle"]
            raise EdgeRobustError(f"the bundle {latest} recorded by run {self.path} no longer exists; re-export it "
                                  "or pass BUNDLE")

        def key(item: tuple[str, Path]) -> tuple[str, int]:
            manifest = item[1] / BUNDLE_MANIFEST
            return item[0], manifest.stat().st_mtime_ns if manifest.is_file() else 0

        return max(found, key=key)[1]

    def precisions(self, target: str) -> list[str]:
        """The precisions exported for `target` ([] when it was not exported)."""
        return list(self.exports().get(target, {}).get("precisions", []))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["model"]["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["model"]["num_classes"])


def check_model_info(info: Any, where: Path) -> None:
    """The manifest's "model" section: spec (text), input_shape (C,H,W positive integers), num_classes (≥ 2),
    optional mean/std (one number per channel)."""
    def bad(field: str, wanted: str) -> EdgeRobustError:
        return EdgeRobustError(f"{where}: model.{field} must be {wanted}; restore the run's model.json")

    if not isinstance(info, dict):
        raise EdgeRobustError(f"{where} is not an edgerobust run manifest (its 'model' is not a table)")
    if not isinstance(info.get("spec"), str):
        raise bad("spec", "a model spec such as scnn2:16-32")
    shape = info.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(s) is int and s >= 1 for s in shape)):
        raise bad("input_shape", "three positive integers [C, H, W]")
    classes = info.get("num_classes")
    if type(classes) is not int or classes < 2:
        raise bad("num_classes", "an integer of at least 2 classes")
    for field in ("mean", "std"):
        value = info.get(field)
        if value is not None and not (isinstance(value, list) and len(value) == shape[0] and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise bad(field, f"a list of {shape[0]} numbers (one per channel)")
    activation = info.get("activation")
    if activation is not None and not (isinstance(activation, dict) and isinstance(activation.get("name"), str)
                                       and isinstance(activation.get("options", {}), dict)):
        raise bad("activation", "a table with a name (e.g. kaf) and options")
    if "std" in info and info["std"] is not None and min(info["std"]) <= 0:
        raise bad("std", "positive")
    if info.get("pca") is not None:
        from .models.pca import check_pca_record

        problem = check_pca_record(info["pca"], shape[0] * shape[1] * shape[2])
        if problem:
            raise bad("pca", problem)
    source = info.get("source")
    if source is not None and not (isinstance(source, dict) and isinstance(source.get("kwargs", {}), dict)):
        raise bad("source", "a table (the user model's import path, kwargs and package)")
