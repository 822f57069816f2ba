"""The runner's `info` on a Jetson and a GPU server, read from fixture files in the real formats via --root."""
import shutil
from pathlib import Path

import pytest
from runner_helpers import run_runner

from edgerobust.runner import machine

FIXTURES = Path(__file__).parent / "fixtures"
NANO = FIXTURES / "jetson" / "nano-maxn"


def info(root):
    code, doc = run_runner("info", "--root", root)
    assert code == 0 and doc["ok"] and doc["command"] == "info", doc
    return doc["result"]


def test_jetson_nano_facts_from_its_files():
    result = info(NANO)
    jetson = result["jetson"]
    assert jetson == {"model": "NVIDIA Jetson Nano Developer Kit", "l4t": "32.7.1", "l4t_board": "t210ref",
                      "soc": "tegra210", "power_mode": {"name": "MAXN", "id": 0}, "clocks_pinned": True}
    assert result["gpu"] == {"name": "NVIDIA Tegra X1 (Maxwell)", "compute_capability": "5.3",
                             "source": "device-tree"}
    assert result["thermal"] == {"AO-therm": 39.5, "CPU-therm": 31.0, "GPU-therm": 30.5, "PLL-therm": 29.25,
                                 "PMIC-Die": 100.0, "thermal-fan-est": 31.1}
    cpu = result["clocks"]["cpu"]
    assert [c["cpu"] for c in cpu] == [0, 1, 2, 3] and {c["cur_hz"] for c in cpu} == {1479000 * 1000}
    assert result["clocks"]["gpu"] == {"device": "57000000.gpu", "cur_hz": 921600000, "min_hz": 921600000,
                                       "max_hz": 921600000, "governor": "nvhost_podgov"}
    facts = result["machine"]
    assert facts["cpu_model"] == "Cortex-A57" and facts["cpu_online"] == 4
    assert facts["memory_total_bytes"] == 4059136 * 1024 and facts["memory_available_bytes"] == 3031284 * 1024
    assert facts["os"] == "Ubuntu 18.04.6 LTS"


def test_unpinned_clocks_and_a_5w_mode(tmp_path):
    root = tmp_path / "nano"
    shutil.copytree(NANO, root)
    (root / "sys/devices/system/cpu/cpu2/cpufreq/scaling_min_freq").write_text("102000\n")
    (root / "commands/nvpmodel-q").write_text("NV Fan Mode:quiet\nNV Power Mode: 5W\n1\n")
    jetson = info(root)["jetson"]
    assert jetson["clocks_pinned"] is False and jetson["power_mode"] == {"name": "5W", "id": 1}


def test_environment_variable_is_the_same_root(monkeypatch):
    monkeypatch.setenv("EDGEROBUST_RUNNER_ROOT", str(NANO))
    code, doc = run_runner("info")
    assert code == 0 and doc["result"]["jetson"]["l4t"] == "32.7.1"


def test_gpu_server_from_nvidia_smi_and_the_driver(tmp_path):
    result = info(FIXTURES / "gpu-server")
    assert result["jetson"] is None
    assert result["gpu"] == {"name": "NVIDIA H200", "compute_capability": "9.0", "source": "nvidia-smi"}
    root = tmp_path / "server"
    shutil.copytree(FIXTURES / "gpu-server", root)
    (root / "commands/nvidia-smi").unlink()  # no nvidia-smi: the driver's /proc entry still names the GPU
    assert info(root)["gpu"] == {"name": "NVIDIA H200", "compute_capability": None, "source": "/proc/driver/nvidia"}


def test_a_machine_with_nothing_readable_reports_nulls(tmp_path):
    result = info(tmp_path)
    assert result["jetson"] is None and result["gpu"] is None and result["thermal"] == {}
    assert result["clocks"] == {"cpu": [], "gpu": None} and result["machine"]["memory_total_bytes"] is None


@pytest.mark.parametrize("text, expected", [
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64", ("32.7.1", "t210ref")),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", ("35.4.1", "t186ref")),
    ("garbage", (None, None)),
])
def test_tegra_release_lines(text, expected):
    assert machine.parse_tegra_release(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("NV Power Mode: MAXN\n0\n", {"name": "MAXN", "id": 0}),
    ("NVPM WARN: fan mode is not set!\nNV Power Mode: MODE_15W_2CORE\n3\n", {"name": "MODE_15W_2CORE", "id": 3}),
    ("", None),
])
def test_nvpmodel_output(text, expected):
    assert machine.parse_nvpmodel(text) == expected


def test_cpu_list_format():
    assert machine.parse_online("0-3,6,8-9\n") == [0, 1, 2, 3, 6, 8, 9] and machine.parse_online(None) == []


def test_this_machine_reports_its_architecture():
    import platform

    result = run_runner("info")[1]["result"]
    assert result["machine"]["architecture"] == platform.machine()
    assert result["packages"]["numpy"] and "CPUExecutionProvider" in result["providers"]
    assert result["runtimes"]["ort-cpu"]["available"] is True


# ---- emulation: an aarch64 userland under qemu-user ------------------------------------------------------------
QEMU = FIXTURES / "qemu-aarch64"
QEMU_MAPS = "00400000-00800000 r-xp 00000000 08:01 123 /usr/bin/qemu-aarch64-static\n"


def test_qemu_user_is_reported_as_emulated():
    result = info(QEMU)
    assert result["machine"]["architecture"] == "aarch64" and result["machine"]["emulated"] is True
    emulation = result["emulation"]
    assert emulation["emulated"] is True and emulation["by"] == "qemu-user"
    assert any("/proc/cpuinfo has x86 fields" in e and "vendor_id" in e and "flags" in e
               for e in emulation["evidence"])
    assert any("binfmt_misc runs aarch64 programs with /usr/libexec/qemu-binfmt/aarch64-binfmt-P" in e
               for e in emulation["evidence"])


def test_a_real_board_and_a_real_x86_machine_are_not_emulated(tmp_path):
    nano = info(NANO)
    assert nano["machine"]["architecture"] == "aarch64" and nano["emulation"] == {
        "emulated": False, "by": None, "evidence": []}
    x86 = tmp_path / "x86"
    shutil.copytree(QEMU, x86)
    (x86 / "commands/uname-m").write_text("x86_64\n")  # the host itself: its own cpuinfo, an aarch64 binfmt entry
    assert info(x86)["emulation"]["emulated"] is False


@pytest.mark.parametrize("change, evidence", [
    # newer qemu emulates an ARM /proc/cpuinfo; the binfmt entry alone still tells
    (lambda root: (root / "proc/cpuinfo").write_text((NANO / "proc/cpuinfo").read_text()), "binfmt_misc"),
    # binfmt_misc not mounted in the userland; the x86 cpuinfo alone still tells
    (lambda root: shutil.rmtree(root / "proc/sys"), "/proc/cpuinfo"),
    # the emulator visible in the process's own mappings
    (lambda root: (shutil.rmtree(root / "proc/sys"), (root / "proc/cpuinfo").unlink(),
                   (root / "proc/self").mkdir(), (root / "proc/self/maps").write_text(QEMU_MAPS)),
     "qemu-aarch64-static"),
    # a disabled binfmt entry and nothing else: no evidence
    (lambda root: ((root / "proc/cpuinfo").unlink(), (root / "proc/sys/fs/binfmt_misc/qemu-aarch64").write_text(
        "disabled\ninterpreter /usr/bin/qemu-aarch64-static\n")), None),
])
def test_each_piece_of_evidence_alone(tmp_path, change, evidence):
    root = tmp_path / "qemu"
    shutil.copytree(QEMU, root)
    change(root)
    emulation = info(root)["emulation"]
    assert emulation["emulated"] is (evidence is not None)
    if evidence:
        assert len(emulation["evidence"]) == 1 and evidence in emulation["evidence"][0]
