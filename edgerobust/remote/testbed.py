"""A loopback OpenSSH server for tests and for trying the harness by hand (`python -m edgerobust.remote.testbed`).

It runs Debian's `sshd` as the current user on 127.0.0.1 and a free port, with a generated host key, user key,
authorized_keys, known_hosts and a client `ssh_config` whose aliases (`edge-a`, `edge-b`, ...) name it. Nothing
outside its directory is touched except, as root, the privilege-separation directory sshd insists on.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import EdgeRobustError

SSHD_PATHS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


def find_sshd() -> str | None:
    found = shutil.which("sshd")
    return found or next((p for p in SSHD_PATHS if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key without passphrase; return the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return path.with_name(path.name + ".pub").read_text().strip()


class LoopbackSSHD:
    """`with LoopbackSSHD(dir) as bed:` starts sshd; `bed.config` is the client ssh_config, `bed.alias` a Host."""

    def __init__(self, directory: str | os.PathLike, aliases: tuple[str, ...] = ("edge-a", "edge-b")):
        sshd = find_sshd()
        if sshd is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
            raise EdgeRobustError("the loopback test bed needs OpenSSH's client and server: "
                                  "apt-get install -y openssh-client openssh-server")
        self.sshd = sshd
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.aliases = aliases
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.host_key = self.dir / "host_ed25519"
        self.user_key = self.dir / "user_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.config = self.dir / "ssh_config"
        self.host_pub = keygen(self.host_key, "edgerobust-testbed-host")
        user_pub = keygen(self.user_key, "edgerobust-testbed-user")
        (self.dir / "authorized_keys").write_text(user_pub + "\n")
        for path in (self.host_key, self.user_key):
            path.chmod(0o600)

    @property
    def alias(self) -> str:
        return self.aliases[0]

    @property
    def address(self) -> str:
        """`user@127.0.0.1:port`, the spelling a user without an ssh_config alias would type."""
        return f"{self.user}@127.0.0.1:{self.port}"

    def write_client_files(self, host_pub: str | None = None, identity: Path | None = None) -> None:
        """known_hosts with `host_pub` (default: the real host key) and an ssh_config using `identity`."""
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub or self.host_pub}\n" if host_pub != ""
                                    else "")
        entries = [f"Host {' '.join(self.aliases)}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"]
        entries.append(f"Host *\n  IdentityFile {identity or self.user_key}\n  IdentitiesOnly yes\n"
                       f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                       "  PasswordAuthentication no\n  LogLevel ERROR\n")
        self.config.write_text("\n".join(entries))

    def start(self) -> LoopbackSSHD:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.port = self.port or free_port()
        (self.dir / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "PermitRootLogin prohibit-password", f"AllowUsers {self.user}", "PidFile none", "LogLevel ERROR",
            "MaxStartups 100", "MaxSessions 100", "",
        ]))
        self.write_client_files()
        self.log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([self.sshd, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EdgeRobustError(f"sshd exited at once ({self.proc.returncode}); see {self.dir / 'sshd.log'}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise EdgeRobustError(f"sshd did not listen on port {self.port} within 15 s; see {self.dir / 'sshd.log'}")

    def stop(self) -> None:
        """Stop the server and every connection it serves (its children start sessions of their own)."""
        import psutil

        if self.proc is not None and self.proc.poll() is None:
            try:
                children = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            for process in [psutil.Process(self.proc.pid), *children]:
                try:
                    process.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> LoopbackSSHD:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="where keys, configs and the server log go")
    args = parser.parse_args(argv)
    bed = LoopbackSSHD(args.directory).start()
    print(f"sshd on 127.0.0.1:{bed.port} (pid {bed.proc.pid}); try:\n"
          f"  ssh -F {bed.config} {bed.alias} true\n"
          f"  EDGEROBUST_SSH_CONFIG={bed.config} edgerobust bench RUN --target x86-cpu --host {bed.alias}\n"
          "Ctrl-C stops it.", flush=True)
    try:
        bed.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        bed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
