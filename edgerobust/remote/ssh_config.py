"""What an ssh_config file named by someone else would make ssh do on this machine.

A fleet file or the pytest plugin can name an ssh_config for `ssh -F`. Such a file can run any local command
(`ProxyCommand`, `LocalCommand`, `KnownHostsCommand`, `Match exec`, a PKCS#11 or security-key provider library)
or replace the host-key checks the harness relies on (`UserKnownHostsFile`, `StrictHostKeyChecking no`, ...).
`risky_options` lists those settings so the harness can show them and refuse the file unless the user says they
trust it. The user's own `--ssh-config` and ~/.ssh/config are theirs, and not checked.

Hand-written: no maintained Python package parses ssh_config with OpenSSH's keyword set (paramiko's parser is
partial and would be a dependency for this alone); only keywords are read here, nothing is evaluated.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from ..errors import EdgeRobustError

RUNS_COMMANDS = {"proxycommand": "runs a local command", "localcommand": "runs a local command",
                 "knownhostscommand": "runs a local command", "pkcs11provider": "loads a local library",
                 "securitykeyprovider": "loads a local library", "include": "reads other config files"}
HOST_KEYS = {"userknownhostsfile": "replaces your known_hosts",
             "globalknownhostsfile": "replaces the system known_hosts", "hostkeyalias": "checks another host's key",
             "updatehostkeys": "rewrites known_hosts", "verifyhostkeydns": "trusts host keys from DNS"}
SAFE_STRICT = {"yes", "ask"}
_SETTING = re.compile(r"([A-Za-z0-9]+)\s*(?:=\s*|\s+)(.*)")  # `Keyword value` or `Keyword=value`


def risky_options(path: str | Path) -> list[str]:
    """Each setting of the file that runs something locally or weakens host-key checks, as `Keyword value (why)`."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        raise EdgeRobustError(f"ssh_config {path} does not exist; fix the path") from None
    except OSError as exc:
        raise EdgeRobustError(f"ssh_config {path} cannot be read ({exc.strerror})") from None
    found = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SETTING.fullmatch(line)
        if match is None:
            continue
        keyword, value = match.group(1).lower(), match.group(2).strip()
        shown = f"line {number}: {line[:120]}"
        if keyword in RUNS_COMMANDS:
            found.append(f"{shown} ({RUNS_COMMANDS[keyword]})")
        elif keyword in HOST_KEYS:
            found.append(f"{shown} ({HOST_KEYS[keyword]})")
        elif keyword == "stricthostkeychecking" and value.lower() not in SAFE_STRICT:
            found.append(f"{shown} (accepts unknown or changed host keys)")
        elif keyword == "match" and "exec" in (w.lower() for w in _words(value)):
            found.append(f"{shown} (runs a local command)")
    return found


def _words(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def check_ssh_config(path: str | Path, named_by: str, trusted: bool) -> list[str]:
    """Refuse an ssh_config named by `named_by` (a fleet file, the plugin) that runs commands or changes host keys,
    unless `trusted`; return the risky settings (to show when trusted)."""
    risks = risky_options(path)
    if risks and not trusted:
        raise EdgeRobustError(f"{named_by} names ssh_config {path}, whose settings run local commands or change "
                              f"host-key checks ({'; '.join(risks)}); read it, and pass --trust-ssh-config if you "
                              "trust it")
    return risks
