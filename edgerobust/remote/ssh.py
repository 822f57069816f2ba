"""`--host user@host[:port]`: the system OpenSSH client, so ~/.ssh/config, agents, jump hosts and known_hosts work.

Host keys are checked (StrictHostKeyChecking=yes) unless the caller passes `insecure_host_key`, which the CLI
exposes only as `--insecure-accept-any-host-key`. BatchMode keeps ssh from prompting for a password or passphrase;
nothing secret passes through this module. We read ssh's own messages to tell its failures apart (hand-written:
OpenSSH reports them only as exit status 255 and text).
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile

from .errors import (
    AuthenticationError,
    ConnectionDroppedError,
    HostKeyChangedError,
    HostKeyUnknownError,
    RemoteError,
    UnknownHostError,
    UnreachableError,
)
from .hosts import HostSpec
from .transport import Completed, Transport

DEFAULT_REMOTE_ROOT = ".cache/edgerobust-device"
SSH_FAILED = 255


class SSHTransport(Transport):
    def __init__(self, spec: HostSpec, root: str | None = None, ssh_config: str | None = None,
                 connect_timeout: float = 10.0, insecure_host_key: bool = False):
        self.spec = spec
        self.root = root or DEFAULT_REMOTE_ROOT
        self.ssh_config = ssh_config or os.environ.get("EDGEROBUST_SSH_CONFIG") or None
        self.connect_timeout = connect_timeout
        self.insecure_host_key = insecure_host_key
        self._control: str | None = None  # one multiplexed connection for all of this transport's commands
        self._probing = False  # classify is checking whether the device still answers

    def control_dir(self) -> str:
        if self._control is None:
            self._control = tempfile.mkdtemp(prefix="edgerobust-ssh-")
            atexit.register(self.close)
        return self._control

    def close(self) -> None:
        """End the shared connection (ssh -O exit) and remove its socket directory."""
        if self._control is None:
            return
        subprocess.run([*self.base_argv(), "-O", "exit", "--", self.spec.host], capture_output=True, timeout=10,
                       stdin=subprocess.DEVNULL)
        shutil.rmtree(self._control, ignore_errors=True)
        self._control = None

    def start_master(self) -> None:
        """Open the shared connection once, in the background (stdio detached, so no pipe is held open by it);
        commands then ride on it. A failure to connect raises the typed error here."""
        if self._control is not None:
            return
        self.control_dir()
        with tempfile.TemporaryFile() as err:
            try:
                done = subprocess.run([*self.base_argv(master=True), "-f", "-N", "--", self.spec.host],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                      timeout=self.connect_timeout + 20)
            except subprocess.TimeoutExpired:
                raise UnreachableError(f"{self.label}: no SSH connection within {self.connect_timeout + 20:g} s; "
                                       "is the device on and its SSH server running?") from None
            if done.returncode != 0:
                err.seek(0)
                text = err.read().decode(errors="replace")
                raise ssh_error(text, self.label) or RemoteError(f"{self.label}: ssh failed ({text.strip()[-200:]})")

    def run(self, script: str, stdin: bytes | None = None, timeout: float | None = None):
        self.start_master()
        return super().run(script, stdin=stdin, timeout=timeout)

    def base_argv(self, master: bool = False) -> list[str]:
        argv = ["ssh"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        argv += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}",
                 "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                 "-o", f"ControlPath={self.control_dir()}/%C"]
        argv += ["-o", "ControlMaster=yes", "-o", "ControlPersist=60"] if master else ["-o", "ControlMaster=no"]
        if self.insecure_host_key:
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        else:
            argv += ["-o", "StrictHostKeyChecking=yes"]
        if self.spec.port:
            argv += ["-p", str(self.spec.port)]
        if self.spec.user:
            argv += ["-l", self.spec.user]
        return argv

    def argv(self, script: str) -> list[str]:
        # `--` ends ssh's options; the host was validated not to start with '-'. The remote shell gets one word.
        return [*self.base_argv(), "--", self.spec.host, script]

    def describe(self) -> dict:
        return {**super().describe(), "host_key_checked": not self.insecure_host_key}

    def classify(self, done: Completed) -> None:
        if done.returncode != SSH_FAILED:
            return
        error = ssh_error(done.stderr.decode(errors="replace"), self.label)
        if error is not None:
            raise error
        if not done.stderr.strip() and not self._probing:  # a dead shared connection says nothing: still there?
            self._probing = True  # the probe's own silent 255 is not probed again (it once recursed for 83 s)
            try:
                probe = self.run("exit 0", timeout=self.connect_timeout + 5)
            except RemoteError as exc:
                raise ConnectionDroppedError(f"{self.label}: the connection dropped mid-command and the device no "
                                             f"longer answers ({exc.kind}); results gathered so far are kept") from None
            finally:
                self._probing = False
            if probe.returncode == SSH_FAILED:
                raise ConnectionDroppedError(f"{self.label}: ssh exited 255 without a message, and so did a plain "
                                             "`exit 0` after it: the link or the device's login shell is broken; "
                                             "try `ssh HOST true` by hand")


def ssh_error(stderr: str, label: str) -> Exception | None:
    """The typed error for ssh's stderr, or None when the text names no connection failure."""
    text = stderr.lower()
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    if "could not resolve hostname" in text or "name or service not known" in text:
        return UnknownHostError(f"{label}: unknown host or ~/.ssh/config alias (ssh: {last}); "
                                "check the name or add a Host entry to ~/.ssh/config")
    if "remote host identification has changed" in text or "host key for" in text and "has changed" in text:
        return HostKeyChangedError(f"{label}: the device's host key has CHANGED since it was recorded in known_hosts "
                                   "(a reinstalled device, or someone in between); confirm the new key out of band, "
                                   "then remove the old one with `ssh-keygen -R HOST`")
    if "host key verification failed" in text or "no matching host key" in text or "is not known" in text:
        return HostKeyUnknownError(f"{label}: the device's host key is not in known_hosts; connect once with "
                                   "`ssh HOST` and confirm its fingerprint (or add it with ssh-keyscan)")
    if "permission denied" in text or "too many authentication failures" in text:
        return AuthenticationError(f"{label}: authentication refused (ssh: {last}); load the key into ssh-agent "
                                   "or name it with IdentityFile in ~/.ssh/config")
    if any(s in text for s in ("connection refused", "no route to host", "network is unreachable",
                               "connection timed out", "operation timed out")):
        if "connect to host" in text or "connection refused" in text:
            return UnreachableError(f"{label}: unreachable (ssh: {last}); is the device on and its SSH server "
                                    "running?")
    if any(s in text for s in ("connection closed", "connection reset", "broken pipe", "timeout, server",
                               "not responding", "client_loop", "connection to", "kex_exchange_identification")):
        return ConnectionDroppedError(f"{label}: the connection dropped (ssh: {last}); results gathered so far "
                                      "are kept")
    return None
