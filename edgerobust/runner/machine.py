"""Facts about the device: CPU, memory, OS, packages, GPU and, on a Jetson, L4T release, power mode, clocks, heat.

Everything is read through a `Root`, so tests point it at fixture files in the real formats (`--root` /
EDGEROBUST_RUNNER_ROOT): /proc, /sys and /etc under the root, and system commands' output from ROOT/commands/<name>.
Formats: /etc/nv_tegra_release ("# R32 (release), REVISION: 7.1, GCID: ..., BOARD: t210ref, EABI: aarch64, ..."),
`nvpmodel -q` ("NV Power Mode: MAXN" then the mode id), /sys/class/thermal/thermal_zone*/{type,temp} (m°C),
cpufreq and devfreq in Hz / kHz as the kernel documents them.
"""
import os
import platform
import re
import socket
import subprocess
import sys

# Jetson SoCs by device-tree compatible string: (GPU name, CUDA compute capability) - NVIDIA's published table.
TEGRA_GPUS = {"tegra210": ("NVIDIA Tegra X1 (Maxwell)", "5.3"), "tegra186": ("NVIDIA Tegra X2 (Pascal)", "6.2"),
              "tegra194": ("NVIDIA Xavier (Volta)", "7.2"), "tegra234": ("NVIDIA Orin (Ampere)", "8.7")}
# ARM CPU part numbers (/proc/cpuinfo "CPU part") of the cores Jetsons and common boards use.
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1",
             "0xd40": "Neoverse-V1", "0xd42": "Cortex-A78AE", "0xd4f": "Neoverse-V2", "0x004": "Carmel"}
GPU_DEVFREQ = re.compile(r"gpu|gv11b|gp10b|ga10b|gm20b", re.IGNORECASE)


class Root:
    """Where facts are read from: "/" and real commands, or a fixture root with recorded command outputs."""

    def __init__(self, root=None):
        self.root = root
        self.base = root or "/"

    def path(self, absolute):
        return os.path.join(self.base, absolute.lstrip("/"))

    def read(self, absolute):
        try:
            with open(self.path(absolute), "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return None

    def listdir(self, absolute):
        try:
            return sorted(os.listdir(self.path(absolute)))
        except OSError:
            return []

    def command(self, name, argv):
        """A system command's stdout, or None; under a fixture root it is ROOT/commands/<name>, never run."""
        if self.root is not None:
            return self.read("/commands/" + name)
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10,
                                  universal_newlines=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None


def _int(text):
    try:
        return int(text.strip())
    except (AttributeError, ValueError):
        return None


def parse_tegra_release(text):
    """'# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, ...' -> ('32.7.1', 't210ref')."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    if not match:
        return None, None
    board = re.search(r"BOARD:\s*([^,\s]+)", text)
    return match.group(1) + "." + match.group(2), board.group(1) if board else None


def parse_nvpmodel(text):
    """`nvpmodel -q` output -> {"name", "id"}; warnings such as "NVPM WARN: fan mode is not set!" are skipped."""
    match = re.search(r"NV Power Mode:\s*(\S+)", text or "")
    if not match:
        return None
    after = text[match.end():].split()
    return {"name": match.group(1), "id": _int(after[0]) if after else None}


def parse_online(text):
    """'0-3,5' -> [0, 1, 2, 3, 5] (the kernel's cpu list format)."""
    cpus = []
    for part in (text or "").strip().split(","):
        if "-" in part:
            low, high = part.split("-")
            cpus.extend(range(int(low), int(high) + 1))
        elif part:
            cpus.append(int(part))
    return cpus


def cpu_model(root):
    """ARM: the core named from "CPU part" (a Jetson Nano says only "ARMv8 Processor"); x86: "model name"."""
    text = root.read("/proc/cpuinfo") or ""
    part = re.search(r"^CPU part\s*:\s*(0x[0-9a-fA-F]+)", text, re.MULTILINE)
    if part:
        return ARM_PARTS.get(part.group(1).lower(), "ARM CPU part " + part.group(1))
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if match:
        return match.group(1).strip()
    return platform.processor() or None


def memory(root):
    text = root.read("/proc/meminfo") or ""
    found = {}
    for key in ("MemTotal", "MemAvailable"):
        match = re.search(r"^" + key + r":\s*(\d+)\s*kB", text, re.MULTILINE)
        found[key] = int(match.group(1)) * 1024 if match else None
    return found["MemTotal"], found["MemAvailable"]


def os_name(root):
    text = root.read("/etc/os-release") or ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.MULTILINE)
    return match.group(1) if match else platform.platform()


def thermal(root):
    """{zone type: °C} for every zone that can be read (some Jetson zones refuse reads)."""
    temps = {}
    for zone in root.listdir("/sys/class/thermal"):
        if not zone.startswith("thermal_zone"):
            continue
        kind = (root.read("/sys/class/thermal/" + zone + "/type") or zone).strip()
        milli = _int(root.read("/sys/class/thermal/" + zone + "/temp"))
        if milli is not None:
            temps[kind if kind not in temps else kind + "/" + zone] = milli / 1000.0
    return temps


def cpu_clocks(root):
    """Per online CPU: cpufreq cur/min/max in Hz (the kernel reports kHz) and the governor."""
    online = parse_online(root.read("/sys/devices/system/cpu/online"))
    clocks = []
    for cpu in online:
        base = "/sys/devices/system/cpu/cpu{}/cpufreq/".format(cpu)
        khz = [_int(root.read(base + name)) for name in ("scaling_cur_freq", "scaling_min_freq", "scaling_max_freq")]
        if all(v is None for v in khz):
            continue
        governor = root.read(base + "scaling_governor")
        clocks.append({"cpu": cpu, "cur_hz": _hz(khz[0], 1000), "min_hz": _hz(khz[1], 1000),
                       "max_hz": _hz(khz[2], 1000), "governor": governor.strip() if governor else None})
    return clocks


def _hz(value, scale):
    return None if value is None else value * scale


def gpu_clock(root):
    """The GPU's devfreq node (Jetson: /sys/class/devfreq/57000000.gpu on a Nano), in Hz."""
    for name in root.listdir("/sys/class/devfreq"):
        if GPU_DEVFREQ.search(name):
            base = "/sys/class/devfreq/" + name + "/"
            governor = root.read(base + "governor")
            return {"device": name, "cur_hz": _int(root.read(base + "cur_freq")),
                    "min_hz": _int(root.read(base + "min_freq")), "max_hz": _int(root.read(base + "max_freq")),
                    "governor": governor.strip() if governor else None}
    return None


def clocks_pinned(cpus, gpu):
    """True when every CPU and the GPU run at min = max = current (what jetson_clocks sets); None if unknown."""
    nodes = list(cpus) + ([gpu] if gpu else [])
    if not nodes or any(n["cur_hz"] is None or n["min_hz"] is None or n["max_hz"] is None for n in nodes):
        return None
    return all(n["cur_hz"] == n["min_hz"] == n["max_hz"] for n in nodes)


def device_tree(root, name):
    text = root.read("/proc/device-tree/" + name) or root.read("/sys/firmware/devicetree/base/" + name)
    return [part for part in text.split("\x00") if part] if text else []


def jetson(root):
    """The Jetson facts, or None on any other machine (no /etc/nv_tegra_release)."""
    release = root.read("/etc/nv_tegra_release")
    if release is None:
        return None
    l4t, board = parse_tegra_release(release)
    model = device_tree(root, "model")
    soc = next((c.split(",", 1)[1] for c in device_tree(root, "compatible") if c.split(",", 1)[-1] in TEGRA_GPUS),
               None)
    return {"model": model[0] if model else None, "l4t": l4t, "l4t_board": board, "soc": soc,
            "power_mode": parse_nvpmodel(root.command("nvpmodel-q", ["nvpmodel", "-q"])),
            "clocks_pinned": clocks_pinned(cpu_clocks(root), gpu_clock(root))}


def gpu(root, jetson_facts=None):
    """GPU name and compute capability: the Jetson SoC table, else nvidia-smi, else the NVIDIA driver's /proc."""
    if jetson_facts and jetson_facts.get("soc") in TEGRA_GPUS:
        name, capability = TEGRA_GPUS[jetson_facts["soc"]]
        return {"name": name, "compute_capability": capability, "source": "device-tree"}
    out = root.command("nvidia-smi", ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    if not (out and out.strip()) and root.root is None:  # drivers before 510 do not know compute_cap
        out = root.command("nvidia-smi", ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    if out and out.strip():
        fields = [f.strip() for f in out.strip().splitlines()[0].split(",")]
        return {"name": fields[0], "compute_capability": fields[1] if len(fields) > 1 else None,
                "source": "nvidia-smi"}
    for entry in root.listdir("/proc/driver/nvidia/gpus"):
        text = root.read("/proc/driver/nvidia/gpus/" + entry + "/information") or ""
        match = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        if match:
            return {"name": match.group(1).strip(), "compute_capability": None, "source": "/proc/driver/nvidia"}
    return None


def package_version(name):
    try:
        module = __import__(name)
    except Exception:  # a broken install is "not available" here; `bench` reports the import error itself
        return None
    return getattr(module, "__version__", "unknown")


def ort_providers():
    try:
        import onnxruntime
    except Exception:  # absent or broken: no providers
        return []
    return list(onnxruntime.get_available_providers())


def architecture(root):
    """The machine's architecture as this Python sees it (`uname -m`); a fixture root may record
    ROOT/commands/uname-m (e.g. to stand for an aarch64 process under qemu-user)."""
    recorded = root.read("/commands/uname-m") if root.root is not None else None
    return recorded.strip() if recorded and recorded.strip() else platform.machine()


def _family(arch):
    arch = (arch or "").lower()
    if arch in ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"):
        return "x86"
    if arch.startswith(("aarch64", "arm")):
        return "arm"
    return arch or None


X86_CPUINFO = re.compile(r"^(vendor_id|flags|cpu family)\s*:", re.MULTILINE)
ARM_CPUINFO = re.compile(r"^(CPU implementer|CPU architecture|Features)\s*:", re.MULTILINE)


def emulation(root, arch):
    """Whether this process runs under user-mode emulation (qemu-user via binfmt_misc): timings there mean nothing.

    Evidence, each cheap: /proc/cpuinfo describes another instruction-set family than the process's architecture
    (qemu-user before 8.1 passes the host's file through: an aarch64 process sees x86 `vendor_id` and `flags`);
    /proc/self/maps names a qemu binary; binfmt_misc has an enabled qemu entry for this very architecture, so this
    architecture's programs are run by an emulator here. Returns {"emulated", "by", "evidence": [...]}.
    """
    evidence = []
    family = _family(arch)
    cpuinfo = root.read("/proc/cpuinfo") or ""
    found = [m.group(1) for m in X86_CPUINFO.finditer(cpuinfo)]
    if family == "arm" and found:
        evidence.append("/proc/cpuinfo has x86 fields ({}) on {}".format(", ".join(sorted(set(found))), arch))
    found = [m.group(1) for m in ARM_CPUINFO.finditer(cpuinfo)]
    if family == "x86" and found:
        evidence.append("/proc/cpuinfo has ARM fields ({}) on {}".format(", ".join(sorted(set(found))), arch))
    maps = root.read("/proc/self/maps") or ""
    qemu = re.search(r"\S*/qemu-[\w.-]+", maps)
    if qemu:
        evidence.append("/proc/self/maps maps " + qemu.group(0))
    for entry in root.listdir("/proc/sys/fs/binfmt_misc"):
        if arch and entry == "qemu-" + arch:
            text = root.read("/proc/sys/fs/binfmt_misc/" + entry) or ""
            if text.startswith("enabled"):
                interpreter = re.search(r"^interpreter\s+(\S+)", text, re.MULTILINE)
                evidence.append("binfmt_misc runs {} programs with {}".format(
                    arch, interpreter.group(1) if interpreter else entry))
    return {"emulated": bool(evidence), "by": "qemu-user" if evidence else None, "evidence": evidence}


def machine(root):
    total, available = memory(root)
    return {"architecture": architecture(root), "hostname": socket.gethostname(),
            "python": platform.python_version(), "python_executable": sys.executable, "os": os_name(root),
            "kernel": platform.release(), "cpu_model": cpu_model(root), "cpu_cores": os.cpu_count(),
            "cpu_online": len(parse_online(root.read("/sys/devices/system/cpu/online"))) or None,
            "memory_total_bytes": total, "memory_available_bytes": available}


def short_machine():
    return {"architecture": platform.machine(), "hostname": socket.gethostname(), "python": platform.python_version()}


def conditions(root):
    """Temperatures and clocks, taken before and after a benchmark."""
    return {"thermal": thermal(root), "clocks": {"cpu": cpu_clocks(root), "gpu": gpu_clock(root)}}


def info(root, runtimes):
    facts = jetson(root)
    about = machine(root)
    emulated = emulation(root, about["architecture"])
    about["emulated"] = emulated["emulated"]
    return {"machine": about, "emulation": emulated,
            "packages": {"numpy": package_version("numpy"), "onnxruntime": package_version("onnxruntime"),
                         "tensorrt": package_version("tensorrt")},
            "providers": ort_providers(), "runtimes": runtimes, "gpu": gpu(root, facts), "jetson": facts,
            "clocks": {"cpu": cpu_clocks(root), "gpu": gpu_clock(root)}, "thermal": thermal(root)}
