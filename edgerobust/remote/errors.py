"""Typed errors of the remote harness: each is one line naming what failed on which device and how to fix it.

`kind` is the stable name a fleet table and run files record; `partial` carries results gathered before the failure.
"""
from __future__ import annotations

from typing import Any

from ..errors import EdgeRobustError


class RemoteError(EdgeRobustError):
    """A device that could not be reached, refused us, or failed while it ran the runner."""

    kind = "remote"
    transient = False  # a fleet retries a transient failure once

    def __init__(self, message: str, partial: Any = None):
        super().__init__(message)
        self.partial = partial


class UnknownHostError(RemoteError):
    kind = "unknown-host"


class UnreachableError(RemoteError):
    kind = "unreachable"
    transient = True


class AuthenticationError(RemoteError):
    kind = "auth-refused"


class HostKeyUnknownError(RemoteError):
    kind = "host-key-unknown"


class HostKeyChangedError(RemoteError):
    kind = "host-key-changed"


class PythonMissingError(RemoteError):
    kind = "python-missing"


class PythonTooOldError(RemoteError):
    kind = "python-too-old"


class RuntimeMissingError(RemoteError):
    kind = "runtime-missing"


class BundleRejectedError(RemoteError):
    kind = "bundle-invalid"


class RunnerCrashedError(RemoteError):
    kind = "runner-crashed"


class ConnectionDroppedError(RemoteError):
    kind = "connection-dropped"
    transient = True


class RemoteTimeoutError(RemoteError):
    kind = "timeout"


class RunnerFailedError(RemoteError):
    """The runner answered with a typed error this harness has no class for (its kind is kept)."""

    def __init__(self, message: str, kind: str = "runner-error", partial: Any = None):
        super().__init__(message, partial)
        self.kind = kind


def error_record(exc: BaseException) -> dict[str, str]:
    """The row a run file or fleet table keeps for a failure."""
    return {"kind": getattr(exc, "kind", type(exc).__name__), "message": str(exc)}
