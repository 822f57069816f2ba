"""How a device run reaches its device and when its rows count as settled, both read from `config.DeviceConfig`
(the [device] section, the `--host` options, a fleet file's [[device]] fields) — no second set of defaults."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import STABILITY_LIMITS, DeviceConfig
from ..errors import EdgeRobustError
from .connect import make_transport
from .hosts import parse_host
from .session import DeviceSession


def device_session(config: DeviceConfig) -> DeviceSession:
    """A session with the device `config` names (host, python, root, ssh_config, host-key policy, timeouts);
    nothing is contacted until it is used."""
    spec = parse_host(config.host, config.python)
    transport = make_transport(spec, config.root, config.ssh_config, config.connect_timeout, config.insecure_host_key)
    transport.max_output = int(config.max_output_mib * 2**20)
    return DeviceSession(transport, config.timeout)


@dataclass
class Stability:
    """When a timing row is noisy or the device heats up, measure it again; flag it if it never settles.

    Defaults are `config.STABILITY_LIMITS`; the profile's `[stability]` table (`max_cv`, `max_temperature_rise_c`,
    `remeasure`, validated by devices/profile.py) replaces them where it has them; an option overrides both.
    """

    max_cv: float = float(STABILITY_LIMITS["max_cv"])
    max_temperature_rise_c: float = float(STABILITY_LIMITS["max_temperature_rise_c"])
    remeasure: int = int(STABILITY_LIMITS["remeasure"])  # extra attempts after the first

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
