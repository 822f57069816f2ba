"""Finding device profiles: by name (user directories first, then the profiles shipped in the package) or by path.

Search order for a name: each directory in $EDGEROBUST_DEVICES (os.pathsep-separated), ./devices, then the
built-in profiles in edgerobust/devices/profiles (package data, so they work from an installed wheel).
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .. import tomlfile
from ..errors import EdgeRobustError, UnknownNameError
from .profile import DeviceProfile, ProfileError, profile_from_dict

BUILTIN = "builtin"


def user_directories() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("EDGEROBUST_DEVICES", "").split(os.pathsep) if p]
    return dirs + [Path.cwd() / "devices"]


def _builtin_files() -> dict[str, str]:
    root = resources.files("edgerobust.devices") / "profiles"
    return {p.name[:-5]: p.read_text() for p in root.iterdir() if p.name.endswith(".toml")}


def _parse(text: str, source: str) -> DeviceProfile:
    try:
        data = tomlfile.loads(text)
    except tomlfile.TOMLDecodeError as exc:
        raise ProfileError(f"device profile {source} is not valid TOML: {exc}") from None
    return profile_from_dict(data, source)


def read_profile_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    if not path.is_file():
        raise EdgeRobustError(f"device profile file {path} does not exist")
    return _parse(path.read_text(), str(path))


def _named_files() -> dict[str, tuple[str, str]]:
    """name -> (text, source); earlier directories win over later ones and over the built-ins."""
    found: dict[str, tuple[str, str]] = {}
    for directory in user_directories():
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                found.setdefault(path.stem, (path.read_text(), str(path)))
    for name, text in sorted(_builtin_files().items()):
        found.setdefault(name, (text, f"{BUILTIN}:{name}"))
    return found


def list_profiles() -> list[DeviceProfile]:
    """Every profile reachable by name, sorted; a malformed user file raises naming its bad field."""
    return [_parse(text, source) for _, (text, source) in sorted(_named_files().items())]


def profile_names() -> list[str]:
    return sorted(_named_files())


def load_profile(name_or_path: str | Path | DeviceProfile) -> DeviceProfile:
    """A profile by name (`jetson-nano`) or by path to a .toml file."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or Path(text).is_file():
        return read_profile_file(text)
    files = _named_files()
    if text not in files:
        raise UnknownNameError("target", text, files)
    profile = _parse(*files[text])
    if profile.name != text:
        raise ProfileError(f"device profile {files[text][1]}: field 'name' is '{profile.name}' but the file is "
                           f"named {text}.toml; make them match")
    return profile
