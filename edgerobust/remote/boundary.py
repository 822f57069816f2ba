"""Where device output enters the host: nothing a device sends back is trusted.

A device in the field can be broken or compromised, so everything it prints crosses one boundary before the host
uses it (docs/runner-protocol.md, "What the host trusts"):
- `collect` reads a command's stdout and stderr with a size cap, and kills the command when it sends more;
- `parse_document` takes the runner's one JSON document, refusing a document nested deeper than `MAX_DEPTH` or not
  shaped as the protocol says (`check_document`: the envelope, and the fields the host reads of each command's
  result);
- `clean` replaces every control character of every string in it (ESC, OSC, BEL, DEL, C1, CR/LF) by its visible
  escape and shortens over-long strings, so a device string is text wherever it goes: tables, errors, run files,
  reports and plots. Rich markup in it is never interpreted: the CLI renders device strings as `Text`.
Each violation is a `DeviceOutputError` naming the device and what was wrong, in one line.
"""
from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import time
from typing import Any

from ..config import DeviceConfig
from .errors import RemoteError

# per stream; the runner's largest answers (replay of big sets) are a few MB; [device] max_output_mib / --max-output
MAX_OUTPUT_BYTES = int(DeviceConfig.max_output_mib * 2**20)
MAX_DEPTH = 32  # the protocol's documents nest at most 6 levels
MAX_STRING = 4096  # characters kept of one device string
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class DeviceOutputError(RemoteError):
    """The device answered with output the protocol does not allow (too large, too deep, wrongly shaped)."""

    kind = "device-output-invalid"


def text(value: Any, limit: int = MAX_STRING) -> str:
    """A device string as plain visible text: control characters escaped (`\\x1b`), at most `limit` characters."""
    out = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))
    return out if len(out) <= limit else out[:limit] + f"… ({len(out) - limit} more characters)"


def collect(proc: subprocess.Popen, stdin: bytes, timeout: float | None, cap: int) -> tuple[bytes, bytes, str | None]:
    """Feed `stdin`, read stdout and stderr until both close, at most `cap` bytes each.

    Returns (stdout, stderr, overflow): `overflow` names the stream that went over the cap (the process is then
    left for the caller to kill). Raises subprocess.TimeoutExpired after `timeout` seconds.
    Hand-written because `Popen.communicate` buffers without limit (a device printing 400 MB took 1.6 GB here).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    sizes = {"stdout": 0, "stderr": 0}
    pending = memoryview(stdin)
    with selectors.DefaultSelector() as sel:
        if pending:
            sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
        else:
            proc.stdin.close()
        sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        while sel.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _ in sel.select(left):
                name = key.data
                if name == "stdin":
                    try:
                        written = _write(key.fileobj, pending[:65536])
                    except BrokenPipeError:
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                    continue
                data = _read(key.fileobj)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                sizes[name] += len(data)
                if sizes[name] > cap:
                    return b"".join(chunks["stdout"]), b"".join(chunks["stderr"]), name
                chunks[name].append(data)
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    proc.wait(timeout=left)
    return b"".join(chunks["stdout"]), b"".join(chunks["stderr"]), None


def _write(stream, data: memoryview) -> int:
    return os.write(stream.fileno(), data)


def _read(stream) -> bytes:
    return os.read(stream.fileno(), 65536)


def depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def clean(value: Any) -> Any:
    """A decoded document with every string (keys too) made plain text; numbers, booleans and null kept."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(k, 200): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


# The fields the host reads of each command's `result`: name -> type (a tuple: any of them), per command.
NUMBER = (int, float)
RESULT_FIELDS: dict[str, dict[str, Any]] = {
    "info": {"machine": dict, "runtimes": dict},
    "bench": {"compute": dict, "end_to_end": dict},
    "replay": {"sets": dict},
    "smooth": {"points": list},
    "logits": {"rows": list},
    "verify": {},
    "unpack": {},
    "ping": {},
}
COMPUTE_FIELDS = {"p50_ms": NUMBER, "p99_ms": NUMBER, "cv": NUMBER, "throughput_per_s": (*NUMBER, type(None))}
SET_FIELDS = {"accuracy": NUMBER, "count": int}


def _check_fields(table: Any, fields: dict[str, Any], where: str, label: str) -> None:
    if not isinstance(table, dict):
        raise DeviceOutputError(f"{label}: the device's {where} is a {type(table).__name__}, not an object; "
                                "a broken or foreign runner answered (check the device)")
    for key, kind in fields.items():
        value = table.get(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # JSON true is no number
            got = "missing" if key not in table else f"a {type(value).__name__}"
            raise DeviceOutputError(f"{label}: the device's {where} has no valid '{key}' ({got}); a broken or "
                                    "foreign runner answered (check the device)")


def check_document(doc: Any, command: str, label: str) -> dict[str, Any]:
    """The protocol's envelope and, for a success, the fields of `command`'s result the host reads."""
    where = f"answer to `{command}`"
    _check_fields(doc, {"protocol": int, "ok": bool}, where, label)
    if not doc["ok"]:
        _check_fields(doc, {"error": dict}, where, label)
        return doc
    _check_fields(doc, {"result": dict}, where, label)
    result = doc["result"]
    _check_fields(result, RESULT_FIELDS.get(command, {}), f"{where} result", label)
    if command == "bench":
        _check_fields(result["compute"], COMPUTE_FIELDS, f"{where} compute", label)
        _check_fields(result["end_to_end"], {"p50_ms": NUMBER}, f"{where} end_to_end", label)
    if command == "replay":
        for key, figures in result["sets"].items():
            _check_fields(figures, SET_FIELDS, f"{where} set '{key}'", label)
            _check_points(figures, f"{where} set '{key}'", label)
    if command == "smooth":
        for i, point in enumerate(result["points"]):
            _check_fields(point, {"row": int, "counts": list}, f"{where} point {i}", label)
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in point["counts"]):
                raise DeviceOutputError(f"{label}: the device's {where} point {i} has counts that are not "
                                        "non-negative integers; a broken or foreign runner answered (check the device)")
    if command == "logits":
        _check_logits(result, where, label)
    return doc


def _check_logits(result: dict[str, Any], where: str, label: str) -> None:
    """Every row: its index and a matrix of logits, `samples` rows (1 without samples) of one width, each entry a
    number or null (a non-finite output, which the host counts as outside every bound)."""
    samples = result.get("samples")
    want = samples if isinstance(samples, int) and not isinstance(samples, bool) and samples > 0 else 1
    width = None
    for i, row in enumerate(result["rows"]):
        _check_fields(row, {"row": int, "logits": list}, f"{where} row {i}", label)
        matrix = row["logits"]
        if width is None and matrix and isinstance(matrix[0], list):
            width = len(matrix[0])
        if len(matrix) != want or not width or not all(
                isinstance(line, list) and len(line) == width and all(
                    v is None or (isinstance(v, NUMBER) and not isinstance(v, bool)) for v in line) for line in matrix):
            raise DeviceOutputError(f"{label}: the device's {where} row {i} logits are not {want} rows of "
                                    f"{width or 'the same number of'} numbers; a broken or foreign runner answered "
                                    "(check the device)")


def _check_points(figures: dict[str, Any], where: str, label: str) -> None:
    """A replay set's optional per-point lists: one entry per point (`count`), predictions non-negative integers and
    margins numbers, so the host's divergence counts compare like with like."""
    for key, ok in (("predictions", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
                    ("margins", lambda v: isinstance(v, NUMBER) and not isinstance(v, bool))):
        if key not in figures:
            continue
        values = figures[key]
        if not isinstance(values, list) or len(values) != figures["count"] or not all(ok(v) for v in values):
            raise DeviceOutputError(f"{label}: the device's {where} {key} are not {figures['count']} "
                                    f"{'non-negative integers' if key == 'predictions' else 'numbers'}; a broken or "
                                    "foreign runner answered (check the device)")


def parse_document(stdout: bytes, command: str, label: str) -> dict[str, Any] | None:
    """The runner's document (its last line that starts with '{'), checked and cleaned; None when there is none."""
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            return None
        except RecursionError:
            doc = None
        if doc is None or depth(doc) > MAX_DEPTH:
            raise DeviceOutputError(f"{label}: the device's answer to `{command}` is nested deeper than {MAX_DEPTH} "
                                    "levels; a broken or foreign runner answered (check the device)")
        return clean(check_document(doc, command, label))
    return None
