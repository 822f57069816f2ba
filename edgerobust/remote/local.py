"""`--host local[:PYTHON]`: the device is this machine; the runner runs in a subprocess, optionally under another
interpreter (a torch-free virtual environment), with the same scripts and protocol as over SSH."""
from __future__ import annotations

import os
from pathlib import Path

from .hosts import HostSpec
from .transport import Transport


def default_local_root() -> Path:
    base = os.environ.get("EDGEROBUST_LOCAL_DEVICE") or os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    path = Path(base).expanduser()
    return path if os.environ.get("EDGEROBUST_LOCAL_DEVICE") else path / "edgerobust" / "local-device"


class LocalTransport(Transport):
    def __init__(self, spec: HostSpec, root: str | os.PathLike | None = None):
        self.spec = spec
        self.root = str(Path(root).expanduser().resolve() if root else default_local_root())

    def argv(self, script: str) -> list[str]:
        return ["sh", "-c", script]

    def popen_options(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        return {"env": env}
