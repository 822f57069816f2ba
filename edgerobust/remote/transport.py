"""A transport runs one shell script on a device and returns its exit status, stdout and stderr.

Everything the harness does on a device (probe, copy, run the runner) is a POSIX `sh` script built with every
argument quoted by `shlex.quote`, so the local and SSH transports share all of it. The script runs in the
device's work directory (`root`), which holds `runner/<sha>/` and `bundles/<sha>/`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

from .boundary import MAX_OUTPUT_BYTES, DeviceOutputError, collect, text
from .errors import RemoteTimeoutError
from .hosts import HostSpec


@dataclass
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def stderr_line(self) -> str:
        lines = [line.strip() for line in self.stderr.decode(errors="replace").splitlines() if line.strip()]
        return text(lines[-1], 300) if lines else ""


class Transport:
    """Base: `run(script)` executes `script` with `sh` in `root` on the device."""

    spec: HostSpec
    root: str  # the device's work directory (relative to the login directory over SSH)
    max_output: int = MAX_OUTPUT_BYTES  # bytes of stdout (and of stderr) one command may send back

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def python(self) -> str:
        return self.spec.python

    def argv(self, script: str) -> list[str]:
        raise NotImplementedError

    def classify(self, done: Completed) -> None:
        """Raise the typed error a failed connection means (the SSH transport reads ssh's messages)."""

    def describe(self) -> dict:
        return {"transport": "local" if self.spec.is_local else "ssh", "host": self.label, "python": self.python}

    def run(self, script: str, stdin: bytes | None = None, timeout: float | None = None) -> Completed:
        started = time.perf_counter()
        proc = subprocess.Popen(self.argv(script), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, **self.popen_options())
        try:
            out, err, overflow = collect(proc, stdin if stdin is not None else b"", timeout, self.max_output)
        except subprocess.TimeoutExpired:
            _abandon(proc)
            raise RemoteTimeoutError(f"{self.label}: no answer within {timeout:g} s; the device is busy or hung "
                                     "(raise --timeout or check the device)") from None
        except BaseException:
            _abandon(proc)
            raise
        if overflow:
            _abandon(proc)
            raise DeviceOutputError(f"{self.label}: the device sent more than {self.max_output / 2**20:g} MiB on "
                                    f"{overflow}; it was stopped (a broken or hostile device, or raise --max-output / "
                                    "[device] max_output_mib)")
        done = Completed(proc.returncode, out, err, time.perf_counter() - started)
        self.classify(done)
        return done

    def popen_options(self) -> dict:
        return {}


def _abandon(proc: subprocess.Popen) -> None:
    """Kill the command's process group and stop reading: a shared SSH connection may hold our pipes open."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
