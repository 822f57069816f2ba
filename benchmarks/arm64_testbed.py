"""The aarch64 test bed's own costs, so CI's budget for the tests marked arm64 stays known.

Figures (scripts/arm64-testbed.sh, docs/arm64-testbed.md), each with the git commit and the machine's load:
- userland build: mmdebstrap of Debian arm64 under qemu-user into an empty cache directory (seconds, size);
- device-side install: aarch64 numpy + onnxruntime wheels downloaded on the host, installed into the userland's venv;
- sshd start: keys generated, the userland's sshd up and accepting a login;
- Python start: `python3 -c 'import numpy, onnxruntime'` over SSH (what every runner command pays at least);
- runner start: the runner's `info` over SSH, files already on the device (median of `--rounds`).
These are an emulator's times on this machine: they size CI's budget and say nothing about a device's speed.
Run: python -m benchmarks.arm64_testbed [--rounds 3] [--keep DIR]   (as root; DIR reuses an existing test bed)
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.common import save_result

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "arm64-testbed.sh"


def git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or None


def testbed(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **env, "PYTHON": sys.executable}, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"arm64-testbed {args[0]} failed: {done.stderr.strip().splitlines()[-1]}")
    return seconds, done.stdout


def ssh(state: Path, command: str, stdin: bytes | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(["ssh", "-F", str(state / "ssh_config"), "arm64-testbed", command], input=stdin,
                   capture_output=True, check=True)
    return time.perf_counter() - started


def runner_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted((ROOT / "edgerobust" / "runner").glob("*.py")):
            tar.add(path, arcname=f"edgerobust_runner/{path.name}")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", help="an existing test bed directory to reuse (its build is not timed)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="arm64-bench-") as scratch:
        cache = Path(args.keep) if args.keep else Path(scratch) / "testbed"
        env = {"EDGEROBUST_ARM64_TESTBED": str(cache)}
        build_s = None if args.keep else testbed(env, "build-userland")[0]
        install_s = None if args.keep else testbed(env, "install-device")[0]
        rootfs = cache / "rootfs"
        size = int(subprocess.run(["du", "-sbx", str(rootfs)], capture_output=True, text=True).stdout.split()[0])
        state = Path(scratch) / "state"
        start_s, _ = testbed(env, "start", str(state))
        try:
            python_s = [ssh(state, "python3 -c 'import numpy, onnxruntime'") for _ in range(args.rounds)]
            copy_s = ssh(state, "rm -rf .bench-runner && mkdir .bench-runner && tar -x -C .bench-runner", runner_tar())
            runner_s = [ssh(state, "python3 -B .bench-runner/edgerobust_runner/run.py info >/dev/null")
                        for _ in range(args.rounds)]
            ssh(state, "rm -rf .bench-runner")
        finally:
            testbed(env, "stop", str(state))
        qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout
    result = {
        "commit": git_commit(), "emulated": True,
        "note": "an emulator's times under this machine's load: CI budget only, never a device latency",
        "load_average_before": [round(x, 2) for x in load_before], "cpus": os.cpu_count(),
        "qemu": qemu.splitlines()[0] if qemu else None,
        "userland_build_s": None if build_s is None else round(build_s, 1),
        "device_install_s": None if install_s is None else round(install_s, 1),
        "rootfs_bytes": size, "sshd_start_s": round(start_s, 2), "runner_copy_s": round(copy_s, 2),
        "python_import_s": {"median": round(statistics.median(python_s), 2), "all": [round(x, 2) for x in python_s]},
        "runner_info_s": {"median": round(statistics.median(runner_s), 2), "all": [round(x, 2) for x in runner_s]},
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    save_result("arm64_testbed", result)


if __name__ == "__main__":
    main()
