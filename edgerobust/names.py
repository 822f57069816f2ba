"""One rule for names that become a file or directory name under a run: device names, slugs and set names.

A fleet's device name, the recipe's `[device] name`, a slug made from a host label and the key of an adversarial
set each end up as `RUN/device/<name>/` or `<key>.npz`. A name is 1 to 64 characters of letters, digits, '.', '_'
and '-' and starts with a letter, digit or '_': so never '.', '..', a hidden name, an option-like '-x', a path
separator or a control character.
"""
from __future__ import annotations

import re

from .errors import EdgeRobustError

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def check_name(name: object, what: str) -> str:
    """`name` when it follows the rule; else one line naming `what` (e.g. "fleet file F: device 2: field 'name'")."""
    if isinstance(name, str) and SAFE_NAME.fullmatch(name):
        return name
    shown = repr(name)[:80]
    raise EdgeRobustError(f"{what} {shown} is not a usable name: use 1 to 64 letters, digits, '.', '_' or '-', "
                          "starting with a letter, digit or '_' (it becomes a directory or file name)")


def slug(text: str) -> str:
    """A name that follows the rule, made from any text (a host label): other characters become '_'."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".-")[:64].strip("_")
    return out if SAFE_NAME.fullmatch(out) else "device"
