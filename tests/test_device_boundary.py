"""Nothing from the device is trusted: output size, JSON depth and shape, control characters and markup, a device
that exits 255 without a word, host names with a trailing newline. A fake device interpreter (a shell script in front
of the real Python) answers the runner's commands with hostile documents."""
from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from edgerobust.errors import EdgeRobustError
from edgerobust.remote import make_transport, parse_host
from edgerobust.remote.boundary import MAX_DEPTH, DeviceOutputError, clean, parse_document, text
from edgerobust.remote.errors import ConnectionDroppedError, RemoteError
from edgerobust.remote.session import DeviceSession, runner_files

ESC = "\x1b]0;pwned\x07\x1b[31m"


def fake_python(tmp_path: Path, answers: dict[str, str]) -> str:
    """An interpreter that answers runner command NAME with the text `answers[NAME]` and runs Python otherwise."""
    script = ["#!/bin/sh", 'cmd=""', 'case "$2" in ping|info|bench|replay|smooth|verify|unpack) cmd=$2 ;; esac']
    for name, answer in answers.items():
        payload = tmp_path / f"answer-{name}"
        payload.write_text(answer)
        script.append(f'[ "$cmd" = {name} ] && {{ cat {payload}; exit 0; }}')
    script.append(f'exec {sys.executable} "$@"')
    path = tmp_path / "fake-python"
    path.write_text("\n".join(script) + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def session_for(tmp_path: Path, answers: dict[str, str], **transport) -> DeviceSession:
    spec = parse_host(f"local:{fake_python(tmp_path, answers)}")
    t = make_transport(spec, root=str(tmp_path / "device"))
    for key, value in transport.items():
        setattr(t, key, value)
    return DeviceSession(t, timeout=60)


def doc(result=None, ok=True, error=None) -> str:
    body = {"protocol": 1, "ok": ok, "result": result} if ok else {"protocol": 1, "ok": False, "error": error}
    return json.dumps(body) + "\n"


INFO = {"machine": {"architecture": "x86_64", "hostname": "edge-" + ESC + "[/bold]"}, "runtimes": {}}


def test_device_strings_come_back_as_plain_text(tmp_path):
    info = session_for(tmp_path, {"info": doc(INFO)}).call("info", bundle=False)
    hostname = info["machine"]["hostname"]
    assert "\x1b" not in hostname and "\x07" not in hostname
    assert hostname == "edge-\\x1b]0;pwned\\x07\\x1b[31m[/bold]"  # visible escapes, nothing interpreted


def test_a_device_error_message_carrying_escapes_is_escaped(tmp_path):
    answer = doc(ok=False, error={"kind": "internal", "message": "boom" + ESC})
    with pytest.raises(RemoteError) as caught:
        session_for(tmp_path, {"info": answer}).call("info", bundle=False)
    assert "\x1b" not in str(caught.value) and "boom\\x1b]0;pwned" in str(caught.value)


def test_markup_in_a_device_string_is_printed_as_text():
    from edgerobust.cli.render import table

    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(table("on edge-[/bold]", ("device", "v"),
                                                                   [("[/bold][red]x", 1.5)]))
    out = buffer.getvalue()
    assert "[/bold][red]x" in out and "on edge-[/bold]" in out  # no MarkupError, no styling


@pytest.mark.parametrize("answer, what", [
    ("[" * 5000 + "]" * 5000, "runner died"),  # not a document: no '{' line
    ('{"a": ' * 3000 + "1" + "}" * 3000 + "\n", "nested deeper"),
    ('{"a": ' * (MAX_DEPTH + 2) + "1" + "}" * (MAX_DEPTH + 2) + "\n", "nested deeper"),
    (doc({"compute": {"p50_ms": 1.0}}), "no valid"),  # bench without its figures
    (doc({"end_to_end": {"p50_ms": 1.0}}), "no valid 'compute' (missing)"),
    (json.dumps({"protocol": 1, "ok": True, "result": [1, 2]}) + "\n", "no valid 'result' (a list)"),
    (json.dumps({"protocol": "1", "ok": True}) + "\n", "no valid 'protocol' (a str)"),
    (json.dumps({"protocol": 1, "ok": 1, "result": {}}) + "\n", "no valid 'ok' (a int)"),
])
def test_malformed_documents_are_one_typed_line(tmp_path, answer, what):
    session = session_for(tmp_path, {"bench": answer})
    with pytest.raises(RemoteError) as caught:
        session.call("bench", bundle=False)
    message = str(caught.value)
    assert what in message and "\n" not in message and message.startswith("local:")


def test_replay_set_figures_are_checked(tmp_path):
    answer = doc({"sets": {"clean": {"accuracy": "all", "count": 3}}})
    with pytest.raises(DeviceOutputError, match="set 'clean' has no valid 'accuracy'"):
        session_for(tmp_path, {"replay": answer}).call("replay", bundle=False)


@pytest.mark.parametrize("points, what", [
    ({"rows": 1}, "no valid 'points' (a dict)"),
    ([{"row": 0}], "point 0 has no valid 'counts' (missing)"),
    ([{"row": 0, "counts": [3, -1]}], "counts that are not non-negative integers"),
    ([{"row": 0, "counts": [3, True]}], "counts that are not non-negative integers"),
])
def test_smoothing_counts_are_checked(tmp_path, points, what):
    with pytest.raises(DeviceOutputError, match=re.escape(what)):
        session_for(tmp_path, {"smooth": doc({"points": points})}).call("smooth", bundle=False)


def test_output_over_the_cap_stops_the_device_and_keeps_host_memory_flat(tmp_path):
    transport = make_transport(parse_host("local"), root=str(tmp_path / "device"))
    transport.max_output = 2**20
    before = psutil.Process().memory_info().rss
    with pytest.raises(DeviceOutputError, match="more than 1 MiB on stdout"):
        transport.run("yes edgerobust | head -c 400000000")
    assert psutil.Process().memory_info().rss - before < 64 * 2**20  # 400 MB were never buffered
    with pytest.raises(DeviceOutputError, match="on stderr"):
        transport.run("yes edgerobust | head -c 4000000 >&2")
    assert transport.run("printf ok").stdout == b"ok"  # under the cap: as before


def test_the_cap_is_a_device_setting_from_recipe_fleet_and_cli(tmp_path):
    from edgerobust.config import DeviceConfig
    from edgerobust.remote.boundary import MAX_OUTPUT_BYTES
    from edgerobust.remote.fleet import load_fleet
    from edgerobust.remote.options import device_session

    assert device_session(DeviceConfig(host="local", root=str(tmp_path))).transport.max_output == MAX_OUTPUT_BYTES
    session = device_session(DeviceConfig(host="local", root=str(tmp_path), max_output_mib=0.5))
    assert session.transport.max_output == 2**19
    with pytest.raises(DeviceOutputError, match="more than 0.5 MiB on stdout.*--max-output"):
        session.transport.run("yes edgerobust | head -c 1000000")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[device]]\nname = "a"\nhost = "local"\nmax_output_mib = 2\n')
    assert load_fleet(fleet).devices[0].max_output_mib == 2


def test_a_device_that_exits_255_silently_is_a_dropped_link_not_a_recursion(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ssh = bindir / "ssh"
    # the master connection (-N) and its close (-O) succeed; every command then exits 255 without a word
    ssh.write_text('#!/bin/sh\nfor a; do case "$a" in -N|-O) exit 0 ;; esac; done\nexit 255\n')
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    transport = make_transport(parse_host("pi@edge"))
    with pytest.raises(ConnectionDroppedError, match="so did a plain `exit 0`"):
        transport.run("true", timeout=30)
    transport.close()


@pytest.mark.parametrize("bad", ["pi\n@nano", "pi@na\nno", "pi@nano\n:22", "p\ni@nano:22", "pi@\nnano"])
def test_host_and_user_are_matched_in_full(bad):
    with pytest.raises(EdgeRobustError):
        parse_host(bad)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=30))
def test_garbage_documents_give_a_result_or_one_typed_error(value):
    """Soak of the boundary: any JSON value, as the answer to any command, is either accepted (then every string in
    it is plain text) or refused with a DeviceOutputError; no other exception escapes."""
    for command in ("info", "bench", "replay", "verify"):
        envelope = {"protocol": 1, "ok": True, "result": value}
        for payload in (json.dumps(value), json.dumps(envelope)):
            try:
                parsed = parse_document(payload.encode() + b"\n", command, "edge")
            except DeviceOutputError as exc:
                assert "\n" not in str(exc)
                continue
            if parsed is not None:
                assert all(not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in s) for s in _strings(parsed))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_text_escapes_every_control_character_and_bounds_length():
    assert text("a\x1b[2Jb\r\nc\x9b") == "a\\x1b[2Jb\\r\\nc\\x9b"
    assert text("x" * 5000, 10).startswith("x" * 10 + "…")
    assert clean({"k\x1b": ["\x07"]}) == {"k\\x1b": ["\\x07"]}


@pytest.mark.parametrize("plant", ["run.py", "extra.py", "__pycache__"])
def test_a_runner_planted_in_the_device_cache_never_runs_and_is_replaced(runner_bundle, tmp_path, plant):
    transport = make_transport(parse_host("local"), root=str(tmp_path / "device"))
    first = DeviceSession(transport, timeout=120)
    first.connect(runner_bundle)
    copy = tmp_path / "device" / first.runner.rsplit("/", 1)[0]
    evidence = tmp_path / "planted-code-ran"
    payload = f"open({str(evidence)!r}, 'w').write('x')\n"
    if plant == "__pycache__":
        (copy / "__pycache__").mkdir()
        (copy / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"planted")
    else:
        (copy / plant).write_text(payload)

    for session in (first, DeviceSession(transport, timeout=120)):  # mid-session, and a new session's probe
        if session is not first:
            (copy / "run.py").write_text(payload)
            transfer = session.connect(runner_bundle)
            assert transfer.runner_copied
        info = session.call("info")
        assert info["machine"]["architecture"]
        assert not evidence.exists()
        assert sorted(p.name for p in copy.iterdir()) == sorted(runner_files())  # our files, nothing beside them
    assert first.runner_replaced == 1


@pytest.mark.parametrize("bad", ["..", ".", ".hidden", "a/b", "a\\b", "nano\n", "-rf", "", "x" * 65, "na\x1bme"])
def test_device_names_are_confined_by_one_rule(tmp_path, bad):
    from edgerobust.names import check_name
    from edgerobust.remote.fleet import FleetError, load_fleet

    with pytest.raises(EdgeRobustError, match="is not a usable name"):
        check_name(bad, "device name")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"[[device]]\nname = {json.dumps(bad)}\nhost = \"local\"\n")
    with pytest.raises(FleetError, match="device 1: field 'name'"):
        load_fleet(fleet)


def test_a_device_named_dotdot_cannot_escape_the_run(edge_copy, tmp_path):
    from edgerobust.config import DeviceConfig
    from edgerobust.remote.api import device_bench

    before = sorted(p.relative_to(edge_copy.path) for p in edge_copy.path.rglob("*"))
    with pytest.raises(EdgeRobustError, match="name '..' is not a usable name"):
        device_bench(edge_copy, DeviceConfig(host="local", root=str(tmp_path / "device"), target="x86-edge", name=".."))
    assert sorted(p.relative_to(edge_copy.path) for p in edge_copy.path.rglob("*")) == before


def test_slugs_of_host_labels_follow_the_rule():
    from edgerobust.names import SAFE_NAME, slug

    for label in ("pi@nano:2222", "local:/opt/venv/bin/python", "..", "[::1]:22", "-x", "é" * 80):
        assert SAFE_NAME.fullmatch(slug(label)), label
    assert slug("pi@nano:2222") == "pi_nano_2222"


GARBAGE = r'''#!PYTHON
import json, os, random, sys
if len(sys.argv) > 1 and sys.argv[1] == "-c":
    os.execv("PYTHON", ["PYTHON", *sys.argv[1:]])
counter = "STATE"
n = int(open(counter).read()) + 1 if os.path.exists(counter) else 0
open(counter, "w").write(str(n))
rng = random.Random(n)
out = sys.stdout.buffer
kind = n % 8
if kind == 0:  # random bytes, control characters included
    out.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000))))
elif kind == 1:  # a valid document cut short
    doc = json.dumps({"protocol": 1, "ok": True, "result": {"compute": {"p50_ms": 1.0}, "x": "y" * 100}})
    out.write(doc[:rng.randrange(1, len(doc))].encode())
elif kind == 2:  # far more than the cap
    chunk = b"{" * 65536
    for _ in range(64):
        out.write(chunk)
elif kind == 3:  # deep nesting
    depth = rng.choice([40, 900, 5000])
    out.write(('{"a":' * depth + "1" + "}" * depth + "\n").encode())
elif kind == 4:  # the right envelope, garbage inside
    value = rng.choice([[], "s\x1b[2J", 3, None, {"compute": "fast"}, {"sets": {"a": {"accuracy": True}}}])
    out.write((json.dumps({"protocol": 1, "ok": rng.random() < 0.7, "result": value, "error": value}) + "\n").encode())
elif kind == 5:  # an error with escapes and markup
    error = {"kind": "x\x1b]0;t\x07", "message": "[/bold]\x1b[31m" * rng.randrange(1, 50)}
    out.write((json.dumps({"protocol": 1, "ok": False, "error": error}) + "\n").encode())
elif kind == 6:  # stderr flood and an odd exit
    sys.stderr.buffer.write(b"\x1b[31m" * rng.randrange(1, 100000))
    sys.exit(rng.choice([0, 1, 2, 126, 127, 255]))
else:  # nothing at all
    sys.exit(rng.choice([0, 3, 255]))
'''


@pytest.mark.timeout(900)
def test_soak_200_calls_of_garbage_leave_no_traceback_no_stray_file_and_flat_memory(tmp_path):
    script = tmp_path / "garbage-python"
    script.write_text(GARBAGE.replace("PYTHON", sys.executable).replace("STATE", str(tmp_path / "calls")))
    script.chmod(0o755)
    root = tmp_path / "device"
    transport = make_transport(parse_host(f"local:{script}"), root=str(root))
    transport.max_output = 2**20
    session = DeviceSession(transport, timeout=60)
    commands = ["info", "bench", "replay", "verify"]
    outcomes: dict[str, int] = {}
    process = psutil.Process()
    start_rss = process.memory_info().rss
    peak = 0
    for i in range(200):
        command = commands[i % len(commands)]
        try:
            session.call(command, bundle=False)
            outcome = "accepted"
        except RemoteError as exc:  # every failure is one typed line
            message = str(exc)
            assert "\n" not in message and "\x1b" not in message and "\x07" not in message, message
            outcome = exc.kind
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        peak = max(peak, process.memory_info().rss - start_rss)
    assert peak < 200 * 2**20  # 64 MiB a call was sent at most; nothing accumulates
    assert outcomes.get("device-output-invalid", 0) >= 40 and outcomes.get("runner-crashed", 0) >= 20, outcomes
    allowed = {"calls", "garbage-python", "device"}
    assert {p.name for p in tmp_path.iterdir()} <= allowed
    assert {p.name for p in root.iterdir()} <= {"runners"}  # the device's work directory holds only our runner


@pytest.mark.parametrize("swap", ["file", "directory"])
def test_pack_sends_what_it_checked_not_a_link_swapped_in(tmp_path, swap):
    from edgerobust.remote.transfer import TransferError, pack, regular_files

    bundle = tmp_path / "bundle"
    (bundle / "sub").mkdir(parents=True)
    (bundle / "model.onnx").write_bytes(b"model")
    (bundle / "sub" / "set.npz").write_bytes(b"set")
    secret = tmp_path / "secret"
    (secret / "sub").mkdir(parents=True)
    (secret / "id_ed25519").write_text("PRIVATE KEY")
    (secret / "sub" / "set.npz").write_text("PRIVATE KEY")
    names = regular_files(bundle)  # checked: regular files only
    if swap == "file":  # then the file is swapped for a link to a secret
        (bundle / "model.onnx").unlink()
        (bundle / "model.onnx").symlink_to(secret / "id_ed25519")
    else:  # or a directory on the path is
        (bundle / "sub" / "set.npz").unlink()
        (bundle / "sub").rmdir()
        (bundle / "sub").symlink_to(secret / "sub")
    with pytest.raises(TransferError, match="changed while it was being sent"):
        pack(bundle, names)
