"""`--host user@host[:port]`: the system OpenSSH client, so ~/.ssh/config, agents, jump hosts and known_hosts work.

Host keys are checked (StrictHostKeyChecking=yes) unless the caller passes `insecure_host_key`, which the CLI
exposes only as `--insecure-accept-any-host-key`. BatchMode keeps ssh from prompting for a password or passphrase;
nothing secret passes through this module. We read ssh's own messages to tell its failures apart (hand-written:
OpenSSH reports them only as exit status 255 and text).
"""
from __future__ import annotations

import os

from .errors import (
    AuthenticationError,
    ConnectionDroppedError,
    HostKeyChangedError,
    HostKeyUnknownError,
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

    def base_argv(self) -> list[str]:
        argv = ["ssh"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        argv += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}",
                 "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
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
