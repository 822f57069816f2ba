"""Fleets: one run measured on several devices at once (`--hosts fleet.toml`), as Marshall compared boards.

    [fleet]
    concurrency = 4            # devices measured at the same time
    [defaults]                 # any device field, for every device
    target = "jetson-nano"
    [[device]]
    name = "nano-1"            # required, unique: the row of the table and RUN/device/<name>/
    host = "ubuntu@nano1"      # required: user@host[:port], an ~/.ssh/config alias or local[:PYTHON]
    python = "python3"         # the interpreter on the device
    root = "edgerobust-work"   # work directory there (default .cache/edgerobust-device)
    ssh_config = "~/.ssh/config"
    timeout = 600              # seconds for one runner command

Every device gets a health check (`info` + `verify` with golden parity) first, then the measurement; a transient
connection failure (unreachable, dropped) is retried once; a failing device becomes a row with its typed error and
the others go on.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tomlfile
from ..config import DeviceConfig, build
from ..errors import EdgeRobustError
from ..io import write_json
from ..names import check_name
from ..run import RunDir, now
from .api import as_profile, device_bench, device_health, device_replay, resolve_bundle
from .errors import RemoteError, error_record
from .hosts import parse_host
from .options import device_session
from .ssh_config import check_ssh_config

# The [device] fields a fleet file may set per device (the rest of DeviceConfig, what to measure, comes from the
# command line or the recipe, for every device alike).
DEVICE_FIELDS = {"name": str, "host": str, "target": str, "python": str, "root": str, "ssh_config": str,
                 "timeout": (int, float), "connect_timeout": (int, float), "max_output_mib": (int, float),
                 "runtime": str, "threads": int}
FLEET_FIELDS = {"concurrency": int}


class FleetError(EdgeRobustError):
    """A fleet file with a missing, unknown or ill-typed field."""


@dataclass
class Fleet:
    devices: list[DeviceConfig]  # each complete: its file's fields over the settings given for all
    concurrency: int = 4
    source: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    trusted_ssh_settings: list[str] = field(default_factory=list)  # what a trusted ssh_config of the file sets


def _check(table: dict, allowed: dict, where: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise FleetError(f"{where}: '{key}' is not a field; valid fields: {', '.join(allowed)}")
        kind = allowed[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise FleetError(f"{where}: field '{key}' must be {names}, not {type(value).__name__} ({value!r})")


def load_fleet(path: str | Path, base: DeviceConfig | None = None, trust_ssh_config: bool = False) -> Fleet:
    """Read and validate a fleet file; every error names the file and the field. Each device's fields go over
    `base` (the command line's or recipe's [device] settings: what to measure, the user's own ssh_config, host-key
    policy); an ssh_config the file itself names is refused when it runs local commands or changes host-key checks,
    unless `trust_ssh_config` (remote/ssh_config.py)."""
    path = Path(path)
    try:
        data = tomlfile.loads(path.read_text())
    except FileNotFoundError:
        raise FleetError(f"fleet file {path} does not exist") from None
    except (tomlfile.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FleetError(f"fleet file {path} is not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"fleet", "defaults", "device"})
    if unknown:
        raise FleetError(f"fleet file {path}: '{unknown[0]}' is not a section; use [fleet], [defaults], [[device]]")
    fleet_table = data.get("fleet", {})
    defaults = data.get("defaults", {})
    devices = data.get("device")
    if not isinstance(fleet_table, dict) or not isinstance(defaults, dict):
        raise FleetError(f"fleet file {path}: [fleet] and [defaults] must be tables")
    _check(fleet_table, FLEET_FIELDS, f"fleet file {path}: [fleet]")
    _check(defaults, {k: v for k, v in DEVICE_FIELDS.items() if k != "name"}, f"fleet file {path}: [defaults]")
    if not isinstance(devices, list) or not devices or not all(isinstance(d, dict) for d in devices):
        raise FleetError(f"fleet file {path}: field 'device' must be one or more [[device]] tables")
    concurrency = fleet_table.get("concurrency", 4)
    if concurrency < 1:
        raise FleetError(f"fleet file {path}: [fleet] field 'concurrency' must be at least 1")
    out, seen, trusted = [], set(), []
    for i, raw in enumerate(devices):
        where = f"fleet file {path}: device {i + 1}"
        _check(raw, DEVICE_FIELDS, where)
        entry = {**defaults, **raw}
        for required in ("name", "host"):
            if required not in entry:
                raise FleetError(f"{where}: field '{required}' is missing")
        try:
            name = check_name(entry["name"], f"{where}: field 'name'")
        except EdgeRobustError as exc:
            raise FleetError(str(exc)) from None
        if name in seen:
            raise FleetError(f"{where}: field 'name' '{name}' is used twice")
        seen.add(name)
        try:
            parse_host(entry["host"])
        except EdgeRobustError as exc:
            raise FleetError(f"{where}: field 'host': {exc}") from None
        for key in ("timeout", "connect_timeout"):
            if key in entry and entry[key] <= 0:
                raise FleetError(f"{where}: field '{key}' must be positive")
        if entry.get("ssh_config"):
            try:
                risks = check_ssh_config(entry["ssh_config"], f"{where}: field 'ssh_config'", trust_ssh_config)
            except EdgeRobustError as exc:
                raise FleetError(str(exc)) from None
            trusted += [f"{entry['ssh_config']}: {risk}" for risk in risks]
            entry["ssh_config"] = str(Path(entry["ssh_config"]).expanduser())
        out.append(build(DeviceConfig, entry, where, base=base))
    return Fleet(out, concurrency, str(path), trusted_ssh_settings=list(dict.fromkeys(trusted)))


def plan_devices(run: RunDir, fleet: Fleet) -> list[tuple[DeviceConfig, Any, Path]]:
    """Each device of `fleet` with its profile and the run's bundle for it (checked on the host): bad input (a device
    without a target, a run with no export for it) fails here, before any device is contacted."""
    plans = []
    for device in fleet.devices:
        if not device.target:
            raise FleetError(f"fleet file {fleet.source}: device '{device.name}' has no field 'target' and no "
                             "--target was given")
        profile = as_profile(device.target)
        plans.append((device, profile, resolve_bundle(run, profile)))
    return plans


def failed(exc: EdgeRobustError) -> dict[str, Any]:
    """A fleet row's status for a device that failed: a device's typed error, else bad input."""
    if isinstance(exc, RemoteError):
        return {"status": "error", "error": error_record(exc)}
    return {"status": "error", "error": {"kind": "bad-input", "message": str(exc)}}


def run_fleet(run: RunDir | str | Path, fleet: Fleet, kind: str = "bench", *, progress: bool | None = False,
              retry_delay: float = 2.0) -> list[dict[str, Any]]:
    """Health-check then measure (`bench` or `replay`) every device, `fleet.concurrency` at a time.

    Returns one row per device: `status` "ok" with the measurement's file, or "error" with the typed error.
    Bad input (a run with no export for a device's target) fails before any device is contacted."""
    if kind not in ("bench", "replay"):
        raise EdgeRobustError(f"unknown fleet measurement '{kind}'; valid: bench, replay")
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    plans = plan_devices(run, fleet)
    measure = device_bench if kind == "bench" else device_replay

    def one(plan) -> dict[str, Any]:
        device, profile, bundle = plan
        row = {"device": device.name, "host": device.host, "target": profile.name, "kind": kind}
        state: dict[str, Any] = {"session": None}  # the measurement reuses the health check's connection

        def attempt(fn):
            for tries in (1, 2):
                if state["session"] is None:
                    state["session"] = device_session(device)
                try:
                    return fn(state["session"]), tries
                except RemoteError as exc:
                    if not exc.transient or tries == 2:
                        raise
                    state["session"] = None  # one retry, on a new connection, after a pause
                    time.sleep(retry_delay)

        try:
            health, tries = attempt(lambda session: device_health(session, bundle))
            row["health"] = {"verify": health["verify"].get("sha256"), "seconds": health["seconds"],
                             "transfer": health["transfer"], "tries": tries}
            doc, tries = attempt(lambda session: measure(run, device, session, progress=progress))
            row.update(status="ok", tries=tries, file=f"device/{device.name}/{kind}.json", rows=len(doc["rows"]))
        except EdgeRobustError as exc:
            row.update(failed(exc))
        return row

    with ThreadPoolExecutor(max_workers=fleet.concurrency) as pool:
        rows = list(pool.map(one, plans))
    write_json(run.path / "device" / f"fleet-{kind}.json",
               {"format": "edgerobust-fleet-1", "kind": kind, "created": now(), "fleet": fleet.source, "rows": rows})
    return rows
