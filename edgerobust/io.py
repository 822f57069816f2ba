"""Atomic file writes, hashing and safe checkpoint loading."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, EdgeRobustError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeRobustError(f"cannot create directory {path.parent}: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise EdgeRobustError(f"directory {path.parent} is not writable; choose another output path")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeRobustError(f"missing file {path}") from None
    except json.JSONDecodeError as exc:
        raise EdgeRobustError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise EdgeRobustError(f"{path} is not UTF-8 text, so not a JSON file written by edgerobust") from None
    except RecursionError:
        raise EdgeRobustError(f"{path} nests too deeply to be a JSON file written by edgerobust") from None
    except IsADirectoryError:
        raise EdgeRobustError(f"{path} is a directory, not a JSON file") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


def load_torch(path: str | os.PathLike) -> Any:
    """Load a checkpoint with weights_only=True: tensors and plain containers only, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is refused unread
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated, or not a checkpoint at all (not the zip "
                              "archive torch.save writes; a raw pickle?); it was not loaded; re-create it or restore "
                              "a copy")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"unsupported (?:GLOBAL|global)[: ]+([\w.]+)", str(exc))
        if blocked:
            raise CheckpointError(
                f"checkpoint {path} holds code objects ({blocked.group(1)}) and was refused; "
                "only load checkpoints written by edgerobust"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated; re-create it or restore a copy") from None
    except Exception as exc:  # noqa: BLE001  (torch.load on damaged bytes raises almost anything; code never runs)
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); re-create it or restore a copy"
        ) from None
