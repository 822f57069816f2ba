"""Settings of a device run, as plain dataclasses the CLI, the pipeline, fleets and the pytest plugin share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import EdgeRobustError
from .connect import make_transport
from .hosts import parse_host
from .session import DeviceSession


@dataclass
class RemoteOptions:
    """How to reach one device. `insecure_host_key` is the CLI's --insecure-accept-any-host-key."""

    host: str
    python: str | None = None  # the device's interpreter (default python3; `local:PYTHON` also sets it)
    root: str | None = None  # work directory on the device
    ssh_config: str | None = None  # an ssh_config file for `ssh -F` (default: the user's own)
    insecure_host_key: bool = False
    timeout: float = 600.0  # seconds for one runner command
    connect_timeout: float = 10.0

    def session(self) -> DeviceSession:
        spec = parse_host(self.host, self.python)
        transport = make_transport(spec, self.root, self.ssh_config, self.connect_timeout, self.insecure_host_key)
        return DeviceSession(transport, self.timeout)


@dataclass
class Stability:
    """When a timing row is noisy or the device heats up, measure it again; flag it if it never settles.

    Defaults come from the profile's `[stability]` table (`max_cv`, `max_temperature_rise_c`, `remeasure`,
    validated by devices/profile.py) where it has them; an option overrides both.
    """

    max_cv: float = 0.10
    max_temperature_rise_c: float = 5.0
    remeasure: int = 2  # extra attempts after the first

    @classmethod
    def from_profile(cls, limits: dict[str, Any], **override: Any) -> Stability:
        """`limits`: a profile's `stability` field (DeviceProfile.stability); `override`: options (None = unset)."""
        values = {"max_cv": limits.get("max_cv", cls.max_cv),
                  "max_temperature_rise_c": limits.get("max_temperature_rise_c", cls.max_temperature_rise_c),
                  "remeasure": limits.get("remeasure", cls.remeasure)}
        values.update({k: v for k, v in override.items() if v is not None})
        stability = cls(float(values["max_cv"]), float(values["max_temperature_rise_c"]), int(values["remeasure"]))
        if stability.max_cv <= 0 or stability.max_temperature_rise_c <= 0 or stability.remeasure < 0:
            raise EdgeRobustError("stability limits must be positive (max CV, temperature rise) and re-measure ≥ 0")
        return stability

    def settled(self, row: dict[str, Any]) -> tuple[bool, str]:
        cv = row["compute"]["cv"]
        rise = row.get("temperature_rise_c")
        if cv > self.max_cv:
            return False, f"cv {cv:.3f} > {self.max_cv:g}"
        if rise is not None and rise > self.max_temperature_rise_c:
            return False, f"temperature rose {rise:.1f} °C > {self.max_temperature_rise_c:g} °C"
        return True, ""
