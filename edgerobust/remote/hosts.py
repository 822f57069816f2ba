"""Where a device is: `user@host[:port]` or an ~/.ssh/config alias (reached with OpenSSH), or `local[:PYTHON]`.

A host spec names no secret: keys, agents and jump hosts stay in the user's OpenSSH configuration.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import EdgeRobustError

LOCAL = "local"
DEFAULT_PYTHON = "python3"
_NAME = re.compile(r"[A-Za-z0-9_.%+\-]+")  # a user, host name, alias or IPv4 address as ssh(1) takes it


@dataclass(frozen=True)
class HostSpec:
    """A parsed `--host`: `local` runs the runner in a subprocess; otherwise OpenSSH reaches `host`."""

    host: str  # "local", a host name, an address or an ssh alias
    user: str | None = None
    port: int | None = None
    python: str = DEFAULT_PYTHON  # the interpreter on the device

    @property
    def is_local(self) -> bool:
        return self.host == LOCAL

    @property
    def label(self) -> str:
        if self.is_local:
            return LOCAL if self.python == DEFAULT_PYTHON else f"{LOCAL}:{self.python}"
        where = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{where}{':' + str(self.port) if self.port else ''}"


def parse_host(text: str, python: str | None = None) -> HostSpec:
    """Parse `user@host[:port]`, `alias`, `[::1]:2222` or `local[:PYTHON]`; refuse anything ssh would misread."""
    text = (text or "").strip()
    if not text:
        raise EdgeRobustError("--host is empty; give user@host[:port], an ~/.ssh/config alias or local[:PYTHON]")
    if text == LOCAL or text.startswith(LOCAL + ":"):
        interpreter = text[len(LOCAL) + 1:] or python or DEFAULT_PYTHON
        return HostSpec(LOCAL, python=interpreter)
    user = None
    rest = text
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not _NAME.fullmatch(user) or user.startswith("-"):
            raise EdgeRobustError(f"--host '{text}': '{user}' is not a user name")
    port = None
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            raise EdgeRobustError(f"--host '{text}': write an IPv6 address as [addr] or [addr]:port")
        rest_port = tail[1:] if tail.startswith(":") else (tail or None)
    else:
        host, _, rest_port = rest.partition(":")
        rest_port = rest_port or None
    if rest_port is not None:
        if not rest_port.isdigit() or not 0 < int(rest_port) < 65536:
            raise EdgeRobustError(f"--host '{text}': port '{rest_port}' must be a number from 1 to 65535")
        port = int(rest_port)
    if not host or not (_NAME.fullmatch(host) or ":" in host) or host.startswith("-"):
        raise EdgeRobustError(f"--host '{text}': '{host}' is not a host name, address or ~/.ssh/config alias")
    return HostSpec(host, user, port, python or DEFAULT_PYTHON)
