"""One device, reached through a transport: probe it, put the runner and a bundle there (once per hash), and call
the runner's commands (docs/runner-protocol.md), turning every failure into a typed `RemoteError`.

On the device, under the transport's work directory:
    runners/<sha of the runner's files>/edgerobust_runner/*.py   (the host's own runner; copied with tar)
    bundles/<bundle_sha256>/                                      (unpacked by the runner's `unpack`)
    sets/<sha of the set files>/*.npz                             (adversarial sets to replay; same `unpack`)
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runner as runner_package
from ..runner import PACKAGE_DIR_IN_BUNDLE, PROTOCOL
from .boundary import parse_document
from .errors import (
    BundleRejectedError,
    PythonMissingError,
    PythonTooOldError,
    RemoteError,
    RunnerCrashedError,
    RunnerFailedError,
    RuntimeMissingError,
)
from .transfer import pack, regular_files, tree_sha256
from .transport import Completed, Transport

MIN_PYTHON = (3, 6)
PROBE = "edgerobust-probe"
RUNNER_MODIFIED = 97  # the exit status of a call refused because the device's runner copy is not ours
RUNNER_DIR = Path(runner_package.__file__).resolve().parent
BUNDLE_KINDS = {"bundle_missing", "bundle_invalid", "unsafe_path", "bundle_modified", "parity_failed",
                "archive_invalid", "set_invalid"}
INSTALL_HINTS = {
    "onnxruntime": "pip3 install onnxruntime (on a Jetson: NVIDIA's onnxruntime-gpu wheel for its JetPack; "
                   "see scripts/prepare-jetson.sh)",
    "numpy": "pip3 install numpy (on a Jetson: sudo apt-get install python3-numpy)",
    "tensorrt": "install TensorRT with JetPack (sudo apt-get install python3-libnvinfer)",
}


def q(*words: str) -> str:
    """Quote every word for the device's POSIX shell."""
    return " ".join(shlex.quote(str(w)) for w in words)


def runner_files() -> list[str]:
    """The runner's file list, as the runner package itself gives it (what export ships in a bundle too)."""
    return [name for name, _ in runner_package.runner_files()]


@dataclass
class Transfer:
    """What `connect` did: which pieces it had to send, how many bytes, and how long each phase took."""

    runner_copied: bool = False
    bundle_copied: bool = False
    bytes_sent: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"runner_copied": self.runner_copied, "bundle_copied": self.bundle_copied,
                "bytes_sent": self.bytes_sent, "seconds": {k: round(v, 4) for k, v in self.seconds.items()}}


class DeviceSession:
    """`connect(bundle)` once, then `call(command, ...)` the runner; `info()` is cached."""

    def __init__(self, transport: Transport, timeout: float = 600.0):
        self.transport = transport
        self.timeout = timeout
        names = runner_files()
        self.runner_sha = tree_sha256(RUNNER_DIR, names)
        self.runner = f"runners/{self.runner_sha[:16]}/{PACKAGE_DIR_IN_BUNDLE}/run.py"
        self.bundle: str | None = None  # the bundle's directory on the device
        self.bundle_sha: str | None = None
        self.python_version: str | None = None
        self._info: dict | None = None
        self._ready: set[str] = set()  # bundle hashes this session has already put in place and checked
        self.runner_replaced = 0  # copies on the device found modified and replaced by this session
        self._runner_check = runner_check(self.runner.rsplit("/", 1)[0], names)

    @property
    def label(self) -> str:
        return self.transport.label

    def script(self, body: str) -> str:
        root = self.transport.root
        return f"mkdir -p {q(root)} && cd {q(root)} || exit 90\n{body}"

    def run(self, body: str, stdin: bytes | None = None, timeout: float | None = None) -> Completed:
        return self.transport.run(self.script(body), stdin=stdin, timeout=timeout or self.timeout)

    # -- connecting -------------------------------------------------------------------------------------------
    def probe(self) -> set[str]:
        """One round trip: the Python's version and which runner and bundle copies the device already holds."""
        py = q(self.transport.python)
        body = (f"command -v {py} >/dev/null 2>&1 || {{ echo {PROBE} python-missing; exit 0; }}\n"
                f"{py} -c 'import sys; print(\"{PROBE} python %d.%d.%d\" % tuple(sys.version_info[:3]))' "
                f"|| echo {PROBE} python-broken\n"
                f"if {self._runner_check}; then echo {PROBE} runner; "
                f"elif [ -e {q(self.runner.rsplit('/', 2)[0])} ]; then echo {PROBE} runner-modified; fi\n")
        if self.bundle:
            body += f"[ -f {q(self.bundle + '/manifest.json')} ] && echo {PROBE} bundle\n"
        done = self.run(body + "exit 0")
        lines = {line.split(" ", 1)[1] for line in done.stdout.decode(errors="replace").splitlines()
                 if line.startswith(PROBE + " ")}
        if done.returncode != 0 or not lines:
            raise RemoteError(f"{self.label}: the device's shell failed ({done.returncode}: {done.stderr_line}); "
                              f"is {self.transport.root} writable there?")
        if "python-missing" in lines or "python-broken" in lines:
            raise PythonMissingError(f"{self.label}: no working '{self.transport.python}' on the device; install "
                                     "Python 3.6 or newer (sudo apt-get install python3) or name one with --python")
        version = next(line.split()[1] for line in lines if line.startswith("python "))
        self.python_version = version
        if tuple(int(v) for v in version.split(".")[:2]) < MIN_PYTHON:
            raise PythonTooOldError(f"{self.label}: '{self.transport.python}' is Python {version}; the runner needs "
                                    "3.6 or newer (install python3 or name another with --python)")
        return lines

    def connect(self, bundle: str | Path | None = None, verify: bool = True) -> Transfer:
        """Make sure the device holds this runner and `bundle` (copying only what it lacks), then verify it."""
        transfer = Transfer()
        started = time.perf_counter()
        if bundle is not None:
            manifest = Path(bundle, "manifest.json")
            from ..io import sha256_file

            self.bundle_sha = sha256_file(manifest)
            self.bundle = f"bundles/{self.bundle_sha}"
            if self.bundle_sha in self._ready:
                return transfer
        have = self.probe()
        transfer.seconds["connect"] = time.perf_counter() - started
        if "runner" not in have:
            started = time.perf_counter()
            data = pack(RUNNER_DIR, runner_files())
            final = f"runners/{self.runner_sha[:16]}"
            stage = f"{final}.partial-$$"
            body = (f"{'rm -rf ' + final + ' && ' if 'runner-modified' in have else ''}"  # a modified copy goes
                    f"mkdir -p {stage}/{PACKAGE_DIR_IN_BUNDLE} && tar -xf - -C {stage}/{PACKAGE_DIR_IN_BUNDLE} && "
                    f"{{ [ -d {final} ] && rm -rf {stage} || mv {stage} {final}; }}")
            self._check_shell(self.run(body, stdin=data), "copying the runner")
            transfer.runner_copied, transfer.bytes_sent = True, transfer.bytes_sent + len(data)
            transfer.seconds["runner"] = time.perf_counter() - started
        if bundle is not None:
            started = time.perf_counter()
            if "bundle" in have and verify:
                try:
                    self.call("verify", "--no-golden")
                except BundleRejectedError:  # a damaged copy: replace it
                    self._check_shell(self.run(f"rm -rf {q(self.bundle)}"), "removing a damaged bundle copy")
                    have.discard("bundle")
            if "bundle" not in have:
                transfer.bytes_sent += self.unpack(Path(bundle), regular_files(bundle), self.bundle)
                transfer.bundle_copied = True
            transfer.seconds["bundle"] = time.perf_counter() - started
            self._ready.add(self.bundle_sha)
        return transfer

    def unpack(self, directory: Path, names: list[str], dest: str) -> int:
        data = pack(directory, names)
        parent = dest.rsplit("/", 1)[0]
        self.call("unpack", "--archive", "-", "--dest", dest, stdin=data, bundle=False,
                  prelude=f"mkdir -p {q(parent)} && ")
        return len(data)

    def send_sets(self, directory: Path, names: list[str]) -> str:
        """Put set files (e.g. RUN/adversarial/*.npz) on the device once per content hash; return their dir there."""
        dest = f"sets/{tree_sha256(directory, names)[:32]}"
        done = self.run(f"[ -d {q(dest)} ] && echo present; exit 0")
        if b"present" not in done.stdout:
            self.unpack(directory, names, dest)
        return dest

    def _check_shell(self, done: Completed, what: str) -> None:
        if done.returncode != 0:
            raise RemoteError(f"{self.label}: {what} failed ({done.returncode}: {done.stderr_line}); "
                              f"is there space and write access in {self.transport.root}?")

    # -- the runner -------------------------------------------------------------------------------------------
    def call(self, command: str, *args: str, stdin: bytes | None = None, bundle: bool = True,
             timeout: float | None = None, prelude: str = "") -> dict[str, Any]:
        """Run one runner command; return its `result` or raise the typed error it (or the link) reports."""
        words = [self.transport.python, self.runner, command]
        if bundle and self.bundle and command not in ("ping", "info", "unpack"):
            words += ["--bundle", self.bundle]
        limit = (timeout or self.timeout) + 5  # the device ends a runner we stopped waiting for, a little later
        guard = f'T=; command -v timeout >/dev/null 2>&1 && T="timeout -s KILL {limit:g}"\n'
        # The runner copy is checked right before it runs (its files' sha256 and nothing else beside them), and run
        # without writing bytecode, so what runs is what the host sent.
        check = f"{self._runner_check} || {{ echo {PROBE} runner-modified; exit {RUNNER_MODIFIED}; }}\n"
        script = check + guard + prelude + "PYTHONDONTWRITEBYTECODE=1 exec $T " + q(*words, *args)
        done = self.run(script, stdin=stdin, timeout=timeout)
        if done.returncode == RUNNER_MODIFIED and f"{PROBE} runner-modified" in done.stdout.decode(errors="replace"):
            if self.runner_replaced:
                raise RemoteError(f"{self.label}: the runner copy on the device differs from ours again right after "
                                  "it was replaced (something on the device rewrites it, or sha256sum is missing); "
                                  "check the device")
            self.runner_replaced += 1
            self.connect(None, verify=False)  # the probe sees the modified copy, so the runner is sent again
            done = self.run(script, stdin=stdin, timeout=timeout)
        doc = parse_document(done.stdout, command, self.label)
        if doc is None:
            self._diagnose(command, done)
        if doc.get("protocol") != PROTOCOL:
            raise RunnerFailedError(f"{self.label}: the runner speaks protocol {doc.get('protocol')}, this host "
                                    f"{PROTOCOL}; update edgerobust on one side", kind="protocol-mismatch")
        if not doc.get("ok"):
            raise runner_error(self.label, command, doc.get("error") or {})
        return doc.get("result") or {}

    def _diagnose(self, command: str, done: Completed):
        """No JSON came back: tell a dropped link (the next connection fails too) from a runner that died."""
        self.transport.run(self.script("exit 0"), timeout=min(30.0, self.timeout))  # raises if the link is gone
        if done.returncode in (126, 127):
            raise PythonMissingError(f"{self.label}: could not start '{self.transport.python}' ({done.stderr_line})")
        how = f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        raise RunnerCrashedError(f"{self.label}: the runner died during `{command}` ({how}, no result; "
                                 f"last message: {done.stderr_line or 'none'}); results gathered so far are kept")

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.call("info")
        return self._info


def runner_check(directory: str, names: list[str]) -> str:
    """A POSIX `sh` test that the device's runner directory holds exactly our files, byte for byte (sha256sum)."""
    from ..io import sha256_file

    sums = "".join(f"{sha256_file(RUNNER_DIR / name)}  {name}\n" for name in names)
    listing = "".join(f"{name}\n" for name in sorted(names))
    return (f"( cd {q(directory)} 2>/dev/null && "
            f"[ \"$(LC_ALL=C ls -A)\" = {q(listing.rstrip())} ] && "
            f"printf %s {q(sums)} | sha256sum -c --strict --quiet - >/dev/null 2>&1 )")


def runner_error(label: str, command: str, error: dict) -> RemoteError:
    kind, message = str(error.get("kind", "internal")), str(error.get("message", "no message"))
    text = f"{label}: {command}: {message}"
    if kind == "runtime_missing":
        package = next((p for p in INSTALL_HINTS if p in message), None)
        hint = f"; install it: {INSTALL_HINTS[package]}" if package and "install" not in message else ""
        return RuntimeMissingError(text + hint)
    if kind == "python_too_old":
        return PythonTooOldError(text)
    if kind in BUNDLE_KINDS:
        return BundleRejectedError(f"{text} ({kind})")
    return RunnerFailedError(f"{text} ({kind})", kind=kind.replace("_", "-"))
