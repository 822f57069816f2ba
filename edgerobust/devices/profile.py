"""A device profile: what a target can run (runtimes, precisions, opset, memory) and how to read its state.

Profiles are TOML files; `profile_from_dict` validates one and names the bad field in its error.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EdgeRobustError
from ..runner.precisions import CALIBRATION_METHODS, PRECISIONS, REFERENCE
from .operators import OPERATOR_SETS
from .runtimes import profile_runtimes

KNOWN_ACCELERATORS = ("cpu", "gpu")
# How a target runs int8 (its [int8] table): "ort" = onnxruntime's QDQ graph quantized at export (CPU targets),
# "tensorrt" = an engine calibrated on the device from the bundle's calibration set (GPU targets).
INT8_RUNTIMES = ("ort", "tensorrt")
INT8_FIELDS = {"runtime": str, "reduce_range": bool, "method": str}
KNOWN_ARCHES = ("x86_64", "aarch64", "armv7l")
# The TorchScript ONNX exporter takes opsets 7..20; a profile outside that range cannot be exported to.
MIN_OPSET, MAX_OPSET = 7, 20

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class ProfileError(EdgeRobustError):
    """A device profile file with a missing, unknown or ill-typed field."""


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    arch: str  # CPU instruction set of the device: x86_64, aarch64
    accelerator: str  # where the model runs: cpu or gpu
    runtimes: list[str]  # in order of preference (names from devices/runtimes.py)
    precisions: list[str]
    max_opset: int
    operator_set: str  # which operators the preferred runtime can run (see devices/operators.py)
    memory_budget_bytes: int  # memory an application may use for the model, its activations and the runtime
    python: str  # the Python on the device ("3.6" on a Jetson Nano)
    threads: int  # intra-op threads to use; 0 = the physical cores of the machine it runs on
    power: dict[str, Any] = field(default_factory=dict)  # how to read power/thermal state, power modes
    compute_capability: str | None = None  # CUDA sm version, GPUs only
    software: dict[str, str] = field(default_factory=dict)  # versions on the device (JetPack, TensorRT, CUDA)
    aliases: list[str] = field(default_factory=list)  # short names for --target (`jetson` for jetson-nano)
    # p50 latency budget per batch size in ms ({batch: ms}); a single number in the file is the budget at batch 1
    latency_budget_ms: dict[int, float] = field(default_factory=dict)
    # when a device timing row counts as settled: `max_cv`, `max_temperature_rise_c`, `remeasure` (only those given)
    stability: dict[str, float | int] = field(default_factory=dict)
    # how the target runs int8 (empty when it lists no int8): runtime ort|tensorrt, reduce_range, method
    int8: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it was read from

    def latency_budget(self, batch: int = 1) -> float | None:
        """The p50 latency budget (ms) for one call with `batch` inputs, or None where the profile sets none."""
        return self.latency_budget_ms.get(batch)

    def supports_precision(self, precision: str) -> bool:
        return precision in self.precisions

    def require_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise EdgeRobustError(f"target '{self.name}' does not support {precision} "
                                  f"(it supports {', '.join(self.precisions)}); choose another precision or target")

    @property
    def int8_runtime(self) -> str | None:
        """"ort" (onnxruntime QDQ, made at export), "tensorrt" (engine calibrated on the device) or None."""
        return self.int8.get("runtime") if "int8" in self.precisions else None

    def check_opset(self, opset: int) -> None:
        if opset > self.max_opset:
            raise EdgeRobustError(f"target '{self.name}' takes ONNX opset ≤ {self.max_opset}, not {opset}; "
                                  f"pass --opset {self.max_opset} or lower")
        if opset < MIN_OPSET:
            raise EdgeRobustError(f"opset {opset} is too old for the exporter; use {MIN_OPSET}..{self.max_opset}")

    def resolved_threads(self) -> int:
        if self.threads:
            return self.threads
        import psutil

        return psutil.cpu_count(logical=False) or 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# field name -> (type, required); the TOML key for memory is `memory_budget` ("2 GiB" or a byte count).
_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "name": (str, True), "description": (str, False), "arch": (str, True), "accelerator": (str, True),
    "runtimes": (list, True), "precisions": (list, True), "max_opset": (int, True), "operator_set": (str, False),
    "memory_budget": ((str, int), True), "python": (str, True), "threads": (int, False), "power": (dict, False),
    "compute_capability": (str, False), "software": (dict, False), "aliases": (list, False),
    "latency_budget_ms": ((int, float, dict), False), "stability": (dict, False), "int8": (dict, False),
}
# [stability] keys -> (types, smallest allowed value, whether that value itself is allowed)
STABILITY_FIELDS: dict[str, tuple[tuple[type, ...], float, bool]] = {
    "max_cv": ((int, float), 0.0, False), "max_temperature_rise_c": ((int, float), 0.0, False),
    "remeasure": ((int,), 0, True)}
# Keys that belong in a real field now, not in the free-form [power] table.
MOVED_POWER_KEYS = {"latency_budget_ms": "the top-level field latency_budget_ms",
                    **{key: f"the [stability] table ({key})" for key in STABILITY_FIELDS}}
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]*"


def parse_bytes(value: str | int, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = value, "b"
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS | {"": 1}:
            raise ProfileError(f"{where}: '{value}' is not a size; write e.g. \"2 GiB\", \"512 MiB\" or a byte count")
        number, unit = float(match.group(1)), (match.group(2).lower() or "b")
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ProfileError(f"{where}: must be positive")
    return size


def _check_choices(values: list, valid: tuple[str, ...], where: str) -> list[str]:
    if not values:
        raise ProfileError(f"{where}: must list at least one of {', '.join(valid)}")
    for value in values:
        if value not in valid:
            raise ProfileError(f"{where}: unknown value '{value}'; valid values: {', '.join(valid)}")
    if len(set(values)) != len(values):
        raise ProfileError(f"{where}: lists a value twice")
    return list(values)


def profile_from_dict(data: dict[str, Any], source: str = "<dict>") -> DeviceProfile:
    """Validate a parsed profile; every error names the file and the field."""
    def where(key: str) -> str:
        return f"device profile {source}: field '{key}'"

    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ProfileError(f"{where(unknown[0])} is not a profile field; valid fields: {', '.join(_FIELDS)}")
    for key, (kind, required) in _FIELDS.items():
        if key not in data:
            if required:
                raise ProfileError(f"{where(key)} is missing")
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ProfileError(f"{where(key)} must be {names}, not {type(value).__name__} ({value!r})")
    if not re.fullmatch(NAME_PATTERN, data["name"]):
        raise ProfileError(f"{where('name')}: '{data['name']}' must be lower-case letters, digits, '-', '_' or '.'")
    aliases = _check_aliases(data.get("aliases", []), data["name"], where("aliases"))
    if data["arch"] not in KNOWN_ARCHES:
        raise ProfileError(f"{where('arch')}: unknown value '{data['arch']}'; valid values: {', '.join(KNOWN_ARCHES)}")
    if data["accelerator"] not in KNOWN_ACCELERATORS:
        raise ProfileError(f"{where('accelerator')}: unknown value '{data['accelerator']}'; "
                           f"valid values: {', '.join(KNOWN_ACCELERATORS)}")
    runtimes = _check_choices(data["runtimes"], profile_runtimes(), where("runtimes"))
    precisions = _check_choices(data["precisions"], tuple(PRECISIONS), where("precisions"))
    if REFERENCE not in precisions:
        raise ProfileError(f"{where('precisions')}: must include {REFERENCE} (the reference every export is checked "
                           "against)")
    if not MIN_OPSET <= data["max_opset"] <= MAX_OPSET:
        raise ProfileError(f"{where('max_opset')}: {data['max_opset']} is outside the exporter's "
                           f"{MIN_OPSET}..{MAX_OPSET}")
    operator_set = data.get("operator_set", "onnx")
    if operator_set not in OPERATOR_SETS:
        raise ProfileError(f"{where('operator_set')}: unknown value '{operator_set}'; "
                           f"valid values: {', '.join(OPERATOR_SETS.names())}")
    if not re.fullmatch(r"3\.[0-9]+", data["python"]):
        raise ProfileError(f"{where('python')}: '{data['python']}' must look like 3.6 or 3.10")
    threads = data.get("threads", 0)
    if threads < 0:
        raise ProfileError(f"{where('threads')}: must be 0 (all physical cores) or a positive count")
    if data["accelerator"] == "gpu" and "compute_capability" not in data:
        raise ProfileError(f"{where('compute_capability')} is missing (a GPU profile gives its CUDA compute "
                           "capability, e.g. \"5.3\")")
    for key in sorted(set(data.get("power", {})) & set(MOVED_POWER_KEYS)):
        raise ProfileError(f"{where('power.' + key)} is not read from [power]; set it in {MOVED_POWER_KEYS[key]}")
    budgets = _latency_budgets(data.get("latency_budget_ms", {}), where("latency_budget_ms"))
    stability = _stability(data.get("stability", {}), where)
    int8 = _int8(data, runtimes, precisions, where)
    software = data.get("software", {})
    for key, value in software.items():
        if not isinstance(value, str):
            raise ProfileError(f"{where('software.' + key)} must be a string version, not {value!r}")
    return DeviceProfile(
        name=data["name"], description=data.get("description", ""), arch=data["arch"],
        accelerator=data["accelerator"], runtimes=runtimes, precisions=precisions, max_opset=data["max_opset"],
        operator_set=operator_set, memory_budget_bytes=parse_bytes(data["memory_budget"], where("memory_budget")),
        python=data["python"], threads=threads, power=dict(data.get("power", {})),
        compute_capability=data.get("compute_capability"), software=dict(software), aliases=aliases,
        latency_budget_ms=budgets, stability=stability, int8=int8, source=source)


def _positive_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ProfileError(f"{where}: must be a positive number of milliseconds, not {value!r}")
    return float(value)


def _latency_budgets(value: int | float | dict, where: str) -> dict[int, float]:
    """One number (the budget at batch 1) or a table {batch size: ms}, e.g. `latency_budget_ms = {1 = 20, 8 = 90}`."""
    if not isinstance(value, dict):
        return {1: _positive_number(value, where)}
    budgets = {}
    for batch, ms in value.items():
        if not (isinstance(batch, int) and not isinstance(batch, bool) or str(batch).isdigit()) or int(batch) < 1:
            raise ProfileError(f"{where}: key {batch!r} is not a batch size (a positive integer)")
        budgets[int(batch)] = _positive_number(ms, f"{where}.{batch}")
    return dict(sorted(budgets.items()))


def _stability(table: dict, where: Any) -> dict[str, float | int]:
    """The [stability] table: when a device timing row counts as settled (remote/options.py `Stability`)."""
    limits: dict[str, float | int] = {}
    for key, value in table.items():
        if key not in STABILITY_FIELDS:
            raise ProfileError(f"{where('stability.' + key)} is not a stability limit; valid: "
                               f"{', '.join(STABILITY_FIELDS)}")
        kinds, low, inclusive = STABILITY_FIELDS[key]
        ok = not isinstance(value, bool) and isinstance(value, kinds) and (value >= low if inclusive else value > low)
        if not ok or value == float("inf"):
            names = "an integer" if kinds == (int,) else "a number"
            raise ProfileError(f"{where('stability.' + key)} must be {names} {'≥' if inclusive else '>'} {low:g}, "
                               f"not {value!r}")
        limits[key] = value if kinds == (int,) else float(value)
    return limits


def _int8(data: dict[str, Any], runtimes: list[str], precisions: list[str], where: Any) -> dict[str, Any]:
    """The [int8] table: how the target runs int8 (defaults: onnxruntime on a CPU, TensorRT on a GPU)."""
    from ..runner.runtime_specs import RUNTIME_SPECS

    table = data.get("int8", {})
    if "int8" not in precisions:
        if table:
            raise ProfileError(f"{where('int8')}: the profile lists no int8 in precisions; add it or drop [int8]")
        return {}
    for key, value in table.items():
        if key not in INT8_FIELDS:
            raise ProfileError(f"{where('int8.' + key)} is not an int8 setting; valid: {', '.join(INT8_FIELDS)}")
        if not isinstance(value, INT8_FIELDS[key]):
            raise ProfileError(f"{where('int8.' + key)} must be {INT8_FIELDS[key].__name__}, not {value!r}")
    runtime = table.get("runtime", "tensorrt" if data["accelerator"] == "gpu" else "ort")
    if runtime not in INT8_RUNTIMES:
        raise ProfileError(f"{where('int8.runtime')}: unknown value '{runtime}'; valid: {', '.join(INT8_RUNTIMES)}")
    method = table.get("method", CALIBRATION_METHODS[0])
    if method not in CALIBRATION_METHODS:
        raise ProfileError(f"{where('int8.method')}: unknown value '{method}'; valid: {', '.join(CALIBRATION_METHODS)}")
    onnx_int8 = [name for name in runtimes if RUNTIME_SPECS[name].input == "onnx"
                 and "int8" in RUNTIME_SPECS[name].precisions]
    if runtime == "ort" and not onnx_int8:
        raise ProfileError(f"{where('int8.runtime')}: \"ort\" needs a runtime that runs int8 graphs (one of "
                           f"{', '.join(n for n, s in RUNTIME_SPECS.items() if 'int8' in s.precisions)}) in runtimes")
    if runtime == "tensorrt" and data["accelerator"] != "gpu":
        raise ProfileError(f"{where('int8.runtime')}: \"tensorrt\" builds GPU engines; a CPU target uses \"ort\"")
    if runtime == "tensorrt" and "reduce_range" in table:
        raise ProfileError(f"{where('int8.reduce_range')} is an onnxruntime setting; TensorRT targets take none")
    return {"runtime": runtime, "reduce_range": bool(table.get("reduce_range", False)), "method": method}


def _check_aliases(values: list, name: str, where: str) -> list[str]:
    """Short names: like a profile name, not the profile's own name, none twice (clashes across profiles: catalog)."""
    for value in values:
        if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
            raise ProfileError(f"{where}: {value!r} must be lower-case letters, digits, '-', '_' or '.'")
        if value == name:
            raise ProfileError(f"{where}: '{value}' is the profile's own name; list only other names")
    if len(set(values)) != len(values):
        raise ProfileError(f"{where}: lists an alias twice")
    return list(values)
