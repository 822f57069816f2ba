"""Finding device profiles: by name or alias (user directories first, then the profiles shipped in the package) or
by path.

Search order for a name: each directory in $EDGEROBUST_DEVICES (os.pathsep-separated), ./devices, then the
built-in profiles in edgerobust/devices/profiles (package data, so they work from an installed wheel). A name that
is no profile's is looked up among the aliases of every reachable profile; an alias two profiles claim, or that is
another profile's name, is an error naming both. Files are read only when needed, so one unreadable file (not UTF-8,
a directory called x.toml) breaks only the lookups that need it.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from .. import tomlfile
from ..errors import EdgeRobustError, UnknownNameError
from .profile import DeviceProfile, ProfileError, profile_from_dict

BUILTIN = "builtin"


def user_directories() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("EDGEROBUST_DEVICES", "").split(os.pathsep) if p]
    return dirs + [Path.cwd() / "devices"]


def _builtin_files() -> dict[str, Any]:
    root = resources.files("edgerobust.devices") / "profiles"
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def _read_text(path: Any, source: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"device profile {source} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                           f"offset {exc.start}); save it as UTF-8") from None
    except IsADirectoryError:
        raise ProfileError(f"device profile {source} is a directory, not a file") from None
    except OSError as exc:
        raise ProfileError(f"device profile {source} cannot be read: {exc.strerror}") from None


def _parse(text: str, source: str) -> DeviceProfile:
    try:
        data = tomlfile.loads(text)
    except tomlfile.TOMLDecodeError as exc:
        raise ProfileError(f"device profile {source} is not valid TOML: {exc}") from None
    return profile_from_dict(data, source)


def read_profile_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    if path.is_dir():
        raise ProfileError(f"device profile {path} is a directory, not a file")
    if not path.is_file():
        raise EdgeRobustError(f"device profile file {path} does not exist")
    return _parse(_read_text(path, str(path)), str(path))


def _named_files() -> dict[str, tuple[Any, str]]:
    """name -> (file, source); earlier directories win over later ones and over the built-ins; not read yet."""
    found: dict[str, tuple[Any, str]] = {}
    for directory in user_directories():
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                if path.is_file():  # a directory called x.toml is not a profile: `devices list` names it
                    found.setdefault(path.stem, (path, str(path)))
    for name, resource in sorted(_builtin_files().items()):
        found.setdefault(name, (resource, f"{BUILTIN}:{name}"))
    return found


def _load_named(name: str, file: Any, source: str) -> DeviceProfile:
    profile = _parse(_read_text(file, source), source)
    if profile.name != name:
        raise ProfileError(f"device profile {source}: field 'name' is '{profile.name}' but the file is "
                           f"named {name}.toml; make them match")
    return profile


def alias_table(profiles: list[DeviceProfile]) -> dict[str, DeviceProfile]:
    """alias -> profile; an alias two profiles claim, or that is another profile's name, is refused naming both."""
    by_name = {p.name: p for p in profiles}
    table: dict[str, DeviceProfile] = {}
    for profile in profiles:
        for alias in profile.aliases:
            other = by_name.get(alias) or table.get(alias)
            if other is not None and other.name != profile.name:
                what = "is the name of" if alias in by_name else "is also an alias of"
                raise ProfileError(f"device profile {profile.source}: alias '{alias}' {what} profile '{other.name}' "
                                   f"({other.source}); remove it from one of them")
            table[alias] = profile
    return table


def list_profiles() -> list[DeviceProfile]:
    """Every profile reachable by name, sorted; a malformed user file or a clashing alias raises naming it."""
    profiles = [_load_named(name, *entry) for name, entry in sorted(_named_files().items())]
    alias_table(profiles)
    return profiles


def check_in_catalogue(profile: DeviceProfile) -> None:
    """`profile` (e.g. a file being validated) next to every reachable profile of another name: no alias clash."""
    others = [p for p in list_profiles() if p.name != profile.name]
    alias_table([*others, profile])


def skipped_entries() -> list[Path]:
    """Entries named *.toml in the user's profile directories that are not files, so no profile (named, not read)."""
    return [path for directory in user_directories() if directory.is_dir()
            for path in sorted(directory.glob("*.toml")) if not path.is_file()]


def profile_names() -> list[str]:
    return sorted(_named_files())


def resolve_target(name_or_path: str | Path | DeviceProfile) -> tuple[DeviceProfile, str | None]:
    """(profile, the alias it was found by or None): by path to a .toml file, by name, then by alias."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path, None
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or Path(text).is_file():
        return read_profile_file(text), None
    files = _named_files()
    if text in files:
        return _load_named(text, *files[text]), None
    profiles = list_profiles()
    aliases = alias_table(profiles)
    if text not in aliases:
        raise UnknownNameError("target", text, [*files, *(f"{a} (= {p.name})" for a, p in aliases.items())])
    return aliases[text], text


def load_profile(name_or_path: str | Path | DeviceProfile) -> DeviceProfile:
    """A profile by name (`jetson-nano`), alias (`jetson`) or path to a .toml file."""
    return resolve_target(name_or_path)[0]
