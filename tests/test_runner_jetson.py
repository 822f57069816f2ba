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
