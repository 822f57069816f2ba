"""The aarch64 device test bed as pytest fixtures (scripts/arm64-testbed.sh; docs/arm64-testbed.md).

`arm64_testbed` builds (or reuses) the userland and its device side once per session; `arm64_host` starts its sshd
on a free loopback port and stops it by its pid at the end. Where aarch64 emulation cannot run here (no root, qemu or
binfmt) the tests skip with the script's one-line reason, unless EDGEROBUST_REQUIRE_ARM64 is set (CI), where that
is a failure.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "arm64-testbed.sh"
BUILD_TIMEOUT = 3600  # a first build under emulation on a busy machine; later sessions reuse the cache


def run_testbed(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the script; PYTHON is this interpreter, so the host's numpy/onnxruntime versions are the device's."""
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, check=False)


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


@dataclass(frozen=True)
class Arm64Host:
    """A running aarch64 "device": ssh to it with `ssh -F ssh_config alias CMD`."""

    host: str
    port: int
    user: str
    identity: Path
    known_hosts: Path
    ssh_config: Path
    alias: str
    pid: int
    state: Path

    def ssh(self, command: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(self.ssh_config), self.alias, command], capture_output=True,
                              text=True, timeout=timeout, check=False, **kwargs)

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@pytest.fixture(scope="session")
def arm64_testbed() -> Path:
    """The built userland (its path); skips where aarch64 emulation is unavailable, fails in CI."""
    check = run_testbed("check", timeout=120)
    if check.returncode == 3:
        if os.environ.get("EDGEROBUST_REQUIRE_ARM64"):
            pytest.fail(f"EDGEROBUST_REQUIRE_ARM64 is set but {last_line(check)}")
        pytest.skip(last_line(check))
    assert check.returncode == 0, last_line(check)
    build = run_testbed("build", timeout=BUILD_TIMEOUT)
    assert build.returncode == 0, f"test bed build failed: {last_line(build)}"
    return Path(build.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def arm64_host(arm64_testbed, tmp_path_factory) -> Arm64Host:
    state = tmp_path_factory.mktemp("arm64-host")
    started = run_testbed("start", str(state), timeout=900)
    assert started.returncode == 0, f"test bed sshd failed: {last_line(started)}"
    info = json.loads(started.stdout.strip().splitlines()[-1])
    host = Arm64Host(info["host"], int(info["port"]), info["user"], Path(info["identity"]),
                     Path(info["known_hosts"]), Path(info["ssh_config"]), info["alias"], int(info["pid"]), state)
    yield host
    stopped = run_testbed("stop", str(state), timeout=120)
    assert stopped.returncode == 0, last_line(stopped)
