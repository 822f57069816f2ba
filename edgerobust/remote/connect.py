"""The transport for a host spec: a subprocess for `local`, OpenSSH for anything else.

Its own module so that transport.py (the base class) imports neither of its implementations: local.py and ssh.py
import transport.py, and this module imports all three (no import circle).
"""
from __future__ import annotations

from .hosts import HostSpec
from .local import LocalTransport
from .ssh import SSHTransport
from .transport import Transport


def make_transport(spec: HostSpec, root: str | None = None, ssh_config: str | None = None,
                   connect_timeout: float = 10.0, insecure_host_key: bool = False) -> Transport:
    """The transport for a host spec: a subprocess for `local`, OpenSSH for anything else."""
    if spec.is_local:
        return LocalTransport(spec, root)
    return SSHTransport(spec, root, ssh_config=ssh_config, connect_timeout=connect_timeout,
                        insecure_host_key=insecure_host_key)
