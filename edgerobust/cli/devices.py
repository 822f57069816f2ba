"""`edgerobust devices list | show NAME | validate FILE`."""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import typer
from rich.text import Text

from ..devices import DeviceProfile, list_profiles, load_profile, read_profile_file
from ..devices.catalog import check_in_catalogue, skipped_entries
from .common import command, console
from .render import table

devices_app = typer.Typer(name="devices", no_args_is_help=True, rich_markup_mode=None,
                          help="Device profiles: list them, show one, validate your own.")


def _budget(profile: DeviceProfile) -> str:
    return f"{profile.memory_budget_bytes / 2**30:.3g} GiB"


@devices_app.command("list")
@command
def list_devices() -> None:
    """List every profile reachable by name (./devices, $EDGEROBUST_DEVICES, then the built-in ones) and its aliases."""
    profiles = list_profiles()
    rows = [(p.name, f"{p.accelerator} " + (f"sm_{p.compute_capability.replace('.', '')}" if p.compute_capability
                                             else p.arch),
             p.runtimes[0] + (f" (+{len(p.runtimes) - 1})" if len(p.runtimes) > 1 else ""), " ".join(p.precisions),
             p.max_opset, _budget(p), p.python) for p in profiles]
    out = table("device profiles (`edgerobust devices show NAME` for the rest)",
                ("name", "device", "runtime", "precisions", "opset", "memory", "py"), rows)
    out.columns[0].no_wrap = True
    out.columns[0].min_width = max(len(p.name) for p in profiles)
    console.print(out)
    for p in profiles:
        if p.aliases:
            console.print(f"{', '.join(p.aliases)} → {p.name}", highlight=False)
    user = [p for p in profiles if not p.source.startswith("builtin:")]
    for p in user:
        console.print(f"{p.name}: from {p.source}")
    for path in skipped_entries():
        console.print(Text(f"skipped {path}: not a file (a directory or a special file); rename or remove it",
                           style="yellow"))


def profile_text(profile: DeviceProfile) -> str:
    """The profile's file, to start your own from; its aliases are commented out (a copy claiming them would clash)."""
    if profile.source.startswith("builtin:"):
        text = (resources.files("edgerobust.devices") / "profiles" / f"{profile.name}.toml").read_text()
    else:
        text = Path(profile.source).read_text()
    return re.sub(r"(?m)^aliases\s*=", "# aliases of the original; a copy chooses its own: aliases =", text)


def _show(profile: DeviceProfile) -> None:
    rows = [("description", profile.description), ("architecture", profile.arch),
            ("accelerator", profile.accelerator), ("compute capability", profile.compute_capability),
            ("runtimes", ", ".join(profile.runtimes)), ("precisions", ", ".join(profile.precisions)),
            ("max ONNX opset", profile.max_opset), ("operator set", profile.operator_set),
            ("memory budget", f"{_budget(profile)} ({profile.memory_budget_bytes:,} bytes)"),
            ("aliases", ", ".join(profile.aliases)), ("python on device", profile.python),
            ("threads", profile.threads or "physical cores"),
            ("from", profile.source)]
    rows += [(f"latency budget, batch {b}", f"{ms:g} ms (p50)") for b, ms in profile.latency_budget_ms.items()]
    rows += [(f"stability: {k}", v) for k, v in profile.stability.items()]
    rows += [(f"software: {k}", v) for k, v in profile.software.items()]
    for key, value in profile.power.items():
        if isinstance(value, dict):
            rows += [(f"power mode {mode}", how) for mode, how in value.items()]
        else:
            rows.append((f"power: {key}", value))
    console.print(table(f"device profile {profile.name}", ("field", "value"), rows))


@devices_app.command("show")
@command
def show(name: str = typer.Argument(..., help="Profile name or path to a .toml file."),
         as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
         as_toml: bool = typer.Option(False, "--toml", help="Print the profile file (to start your own).")) -> None:
    """Show one profile: runtimes, precisions, opset, memory, Python, threads, power/thermal state."""
    profile = load_profile(name)
    if as_json:
        typer.echo(json.dumps(profile.to_dict(), indent=2))
    elif as_toml:
        typer.echo(profile_text(profile), nl=False)
    else:
        _show(profile)


@devices_app.command("validate")
@command
def validate(file: Path = typer.Argument(..., help="A device profile .toml file.")) -> None:
    """Check a profile file; a malformed one is refused naming the bad field."""
    profile = read_profile_file(file)
    check_in_catalogue(profile)
    console.print(f"[green]ok[/]: {file} is a valid profile for '{profile.name}' "
                  f"({profile.accelerator}, {', '.join(profile.runtimes)}, opset ≤ {profile.max_opset})")
