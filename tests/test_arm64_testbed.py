"""The aarch64 test bed itself: its bad-input lines, and a real aarch64 sshd reached over loopback SSH."""
from __future__ import annotations

import os
import subprocess

import pytest
from arm64_testbed import last_line, run_testbed


def test_testbed_directory_that_is_not_a_userland_is_refused_and_kept(tmp_path):
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "rootfs" / "etc" / "precious").write_text("not a userland")
    proc = run_testbed("build", env={"EDGEROBUST_ARM64_TESTBED": str(tmp_path)}, timeout=60)
    assert proc.returncode == 2
    line = last_line(proc)
    assert line.startswith("arm64-testbed: userland:") and "is not an aarch64 userland built by this script" in line
    assert "EDGEROBUST_ARM64_TESTBED" in line
    assert (tmp_path / "rootfs" / "etc" / "precious").read_text() == "not a userland"  # never deleted


def test_testbed_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run_testbed("build-userland", env={"EDGEROBUST_ARM64_TESTBED": str(tmp_path / "file")}, timeout=60)
    assert proc.returncode == 2 and "is not a directory" in last_line(proc)


def test_missing_qemu_is_named_with_its_package(tmp_path):
    proc = run_testbed("check", env={"EDGEROBUST_ARM64_QEMU": str(tmp_path / "no-qemu-here")}, timeout=60)
    assert proc.returncode == 3
    assert last_line(proc) == (f"arm64-testbed: qemu: {tmp_path / 'no-qemu-here'} not found; install it: "
                               "apt-get install qemu-user-static binfmt-support")


def test_disabled_binfmt_is_named_with_the_fix(tmp_path):
    (tmp_path / "status").write_text("enabled\n")
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    proc = run_testbed("check", env={"EDGEROBUST_ARM64_QEMU": "sh", "EDGEROBUST_ARM64_BINFMT": str(tmp_path)},
                   timeout=60)
    assert proc.returncode == 3
    line = last_line(proc)
    assert line.startswith("arm64-testbed: binfmt: no enabled qemu-aarch64 entry") and "update-binfmts --enable" in line


def test_unknown_command_and_missing_state_dir():
    proc = run_testbed("launch", timeout=60)
    assert proc.returncode == 2 and "unknown command 'launch'" in last_line(proc)
    proc = run_testbed("start", timeout=60)
    assert proc.returncode == 2 and last_line(proc) == "arm64-testbed: usage: start needs a STATE_DIR"


@pytest.mark.arm64
@pytest.mark.timeout(3600)  # the first arm64 test of a session may build the test bed
def test_sshd_that_does_not_come_up_in_time_is_named_and_stopped(arm64_testbed, tmp_path):
    proc = run_testbed("start", str(tmp_path), env={"EDGEROBUST_ARM64_SSHD_TIMEOUT": "0"}, timeout=300)
    assert proc.returncode == 2
    line = last_line(proc)
    assert line.startswith("arm64-testbed: sshd: the userland's sshd did not accept a login on 127.0.0.1:")
    assert "within 0s" in line and "EDGEROBUST_ARM64_SSHD_TIMEOUT" in line
    assert not (tmp_path / "sshd.pid").exists()  # stopped by its pid, nothing left running
    port = (tmp_path / "port").read_text().strip()
    assert not (arm64_testbed / "etc" / "edgerobust-ssh" / port).exists()


@pytest.mark.arm64
@pytest.mark.timeout(3600)  # the first arm64 test of a session may build the test bed
def test_device_is_aarch64_over_ssh_and_a_wrong_host_key_is_refused(arm64_host, tmp_path):
    proc = arm64_host.ssh("uname -m && python3 -c 'import platform, numpy, onnxruntime; "
                          "print(platform.machine(), numpy.__version__, onnxruntime.__version__)'")
    assert proc.returncode == 0, proc.stderr
    uname, python_line = proc.stdout.split("\n")[:2]
    assert uname == "aarch64"
    machine, numpy_version, ort_version = python_line.split()
    assert machine == "aarch64"
    import numpy
    import onnxruntime

    assert (numpy_version, ort_version) == (numpy.__version__, onnxruntime.__version__)  # the same releases

    # The same server under a host key it does not hold: the client refuses before logging in.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    public = (tmp_path / "other.pub").read_text().split()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{arm64_host.port} {public[0]} {public[1]}\n")
    proc = subprocess.run(["ssh", "-F", str(arm64_host.ssh_config), "-o",
                           f"UserKnownHostsFile={tmp_path / 'known_hosts'}", arm64_host.alias, "echo logged-in"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 255 and "logged-in" not in proc.stdout
    assert "host key" in proc.stderr.lower() or "identification has changed" in proc.stderr.lower()
    assert os.path.exists(f"/proc/{arm64_host.pid}")  # the refusal left the server running


FAKE_MMDEBSTRAP = r"""#!/bin/sh
# A stand-in for mmdebstrap: fails FAILS times (as a mirror's hiccup does), then lays out a minimal "userland".
count_file="$FAKE_STATE/calls"
calls=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
echo "$calls" >"$count_file"
echo "I: running apt-get update..."
if [ "$calls" -le "$FAILS" ]; then
  deb=http://deb.example/debian/pool/main/p/python3.11/python3.11_3.11.2-6_arm64.deb
  echo "E: Failed to fetch $deb  Connection reset by peer"
  echo "E: apt-get --yes -oApt::Get::Download-Only=true install failed"
  exit 1
fi
for arg; do case "$arg" in *rootfs.partial) target=$arg ;; esac; done
mkdir -p "$target/bin" "$target/usr/bin" "$target/usr/sbin" "$target/etc"
for f in bin/sh usr/bin/python3 usr/sbin/sshd; do printf '#!/bin/sh\n' >"$target/$f"; chmod 755 "$target/$f"; done
echo 'ID=debian' >"$target/etc/os-release"
# An ELF header whose e_machine (offset 18) is 183, EM_AARCH64: what the script reads to know the architecture.
printf '\177ELF\002\001\001\000\000\000\000\000\000\000\000\000\002\000\267\000' >"$target/bin/dash"
echo "I: success"
"""


def _fake_build(tmp_path, fails: int) -> subprocess.CompletedProcess:
    """`build-userland`, mmdebstrap replaced by a stand-in that fails `fails` times; qemu and binfmt faked enabled."""
    bindir, state, binfmt = tmp_path / "bin", tmp_path / "state", tmp_path / "binfmt"
    for d in (bindir, state, binfmt):
        d.mkdir()
    (bindir / "mmdebstrap").write_text(FAKE_MMDEBSTRAP)
    (bindir / "mmdebstrap").chmod(0o755)
    (binfmt / "status").write_text("enabled\n")
    (binfmt / "qemu-aarch64").write_text("enabled\n")
    (tmp_path / "sources.list").write_text("deb http://deb.example/debian bookworm main\n")
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_STATE": str(state), "FAILS": str(fails),
           "EDGEROBUST_ARM64_TESTBED": str(tmp_path / "cache"), "EDGEROBUST_ARM64_QEMU": "sh",
           "EDGEROBUST_ARM64_BINFMT": str(binfmt), "EDGEROBUST_ARM64_SOURCES": str(tmp_path / "sources.list")}
    return run_testbed("build-userland", env=env, timeout=120)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed's build runs as root (chroot, mount)")


@root_only
def test_userland_build_that_fails_once_is_retried_and_the_full_log_kept(tmp_path):
    proc = _fake_build(tmp_path, fails=1)
    assert proc.returncode == 0, proc.stderr
    assert "arm64-testbed: userland: failed (E: Failed to fetch http://deb.example/debian/pool/main/p/python3.11/" \
           "python3.11_3.11.2-6_arm64.deb  Connection reset by peer); trying once more" in proc.stderr
    assert (tmp_path / "cache" / "rootfs" / ".edgerobust-testbed").is_file()
    log = (tmp_path / "cache" / "build.log").read_text()
    assert log.count("=== attempt") == 2 and "E: apt-get --yes" in log and "I: success" in log


@root_only
def test_userland_build_that_fails_twice_names_the_package_in_one_line(tmp_path):
    proc = _fake_build(tmp_path, fails=2)
    assert proc.returncode == 2
    line = last_line(proc)
    assert line.startswith("arm64-testbed: userland: mmdebstrap failed twice: E: Failed to fetch ")
    assert "python3.11_3.11.2-6_arm64.deb" in line and str(tmp_path / "cache" / "build.log") in line
    assert (tmp_path / "state" / "calls").read_text().strip() == "2"
    assert not (tmp_path / "cache" / "rootfs").exists()  # nothing half-built under the final name
