"""The transports against a real OpenSSH server on loopback (no mocks): quoting, host keys, keys, failures."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.errors import EdgeRobustError
from edgerobust.remote import make_transport, parse_host
from edgerobust.remote.errors import (
    AuthenticationError,
    ConnectionDroppedError,
    HostKeyChangedError,
    HostKeyUnknownError,
    RemoteTimeoutError,
    UnknownHostError,
    UnreachableError,
)
from edgerobust.remote.session import q
from edgerobust.remote.testbed import keygen

pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def shared_transport(ssh_bed):
    transport = make_transport(parse_host(ssh_bed.alias), ssh_config=str(ssh_bed.config))
    yield transport
    transport.close()


def test_parse_host_forms():
    assert parse_host("pi@nano:2222") == parse_host("pi@nano:2222")
    spec = parse_host("pi@nano:2222")
    assert (spec.user, spec.host, spec.port, spec.python) == ("pi", "nano", 2222, "python3")
    assert parse_host("[::1]:22").host == "::1" and parse_host("[::1]:22").port == 22
    assert parse_host("edge-a").user is None
    local = parse_host("local:/opt/venv/bin/python")
    assert local.is_local and local.python == "/opt/venv/bin/python"
    assert parse_host("local").python == "python3"
    for bad in ("", "-oProxyCommand=x", "pi@nano:99999", "pi@nano:ssh", "a b", "pi@", "x;rm"):
        with pytest.raises(EdgeRobustError):
            parse_host(bad)


def test_ssh_runs_commands_and_keeps_streams(ssh_bed):
    for host in (ssh_bed.alias, ssh_bed.address):
        transport = make_transport(parse_host(host), ssh_config=str(ssh_bed.config))
        done = transport.run("echo out; echo err >&2; exit 3")
        assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    assert "StrictHostKeyChecking=yes" in transport.argv("true")


def test_stdin_reaches_the_device(ssh_bed):
    transport = make_transport(parse_host(ssh_bed.alias), ssh_config=str(ssh_bed.config))
    payload = bytes(range(256)) * 1000
    assert transport.run("cat", stdin=payload).stdout == payload


@settings(max_examples=15, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                        max_size=12), min_size=1, max_size=4))
def test_every_argument_arrives_verbatim(shared_transport, words):
    """Quoting: whatever the words hold ($, ;, quotes, newlines, spaces), the device's shell sees them unchanged."""
    done = shared_transport.run("printf '%s\\0' " + q(*words))
    assert done.stdout.decode().split("\0")[:-1] == words


def test_unknown_host_key_is_refused(fresh_bed):
    fresh_bed.write_client_files(host_pub="")
    with pytest.raises(HostKeyUnknownError, match="not in known_hosts"):
        make_transport(parse_host(fresh_bed.alias), ssh_config=str(fresh_bed.config)).run("true")


def test_changed_host_key_is_refused_and_the_opt_out_is_explicit(fresh_bed, tmp_path):
    other = keygen(tmp_path / "impostor", "impostor")
    fresh_bed.write_client_files(host_pub=other)
    with pytest.raises(HostKeyChangedError, match="CHANGED"):
        make_transport(parse_host(fresh_bed.alias), ssh_config=str(fresh_bed.config)).run("true")
    insecure = make_transport(parse_host(fresh_bed.alias), ssh_config=str(fresh_bed.config), insecure_host_key=True)
    assert insecure.run("echo in").stdout == b"in\n"
    assert insecure.describe()["host_key_checked"] is False


def test_wrong_user_key_is_refused(fresh_bed, tmp_path):
    keygen(tmp_path / "stranger", "stranger")
    fresh_bed.write_client_files(identity=tmp_path / "stranger")
    with pytest.raises(AuthenticationError, match="authentication refused"):
        make_transport(parse_host(fresh_bed.alias), ssh_config=str(fresh_bed.config)).run("true")


def test_unreachable_and_unknown_alias(fresh_bed):
    fresh_bed.stop()
    with pytest.raises(UnreachableError, match="unreachable"):
        make_transport(parse_host(fresh_bed.alias), ssh_config=str(fresh_bed.config)).run("true")
    with pytest.raises(UnknownHostError, match="unknown host"):
        make_transport(parse_host("no-such-device.invalid"), ssh_config=str(fresh_bed.config)).run("true")


def test_server_stopped_mid_command_is_a_dropped_connection(fresh_bed):
    transport = make_transport(parse_host(fresh_bed.alias), ssh_config=str(fresh_bed.config))
    transport.run("true")
    stopper = threading.Timer(1.0, fresh_bed.stop)
    stopper.start()
    with pytest.raises(ConnectionDroppedError, match="dropped"):
        transport.run("sleep 30")
    stopper.join()


def test_timeout_kills_the_command(ssh_bed):
    transport = make_transport(parse_host(ssh_bed.alias), ssh_config=str(ssh_bed.config))
    with pytest.raises(RemoteTimeoutError, match="no answer within"):
        transport.run("sleep 30", timeout=1.5)


def test_transfer_sends_regular_files_only(tmp_path):
    import os
    import tarfile

    from edgerobust.remote.transfer import TransferError, pack, regular_files

    (tmp_path / "b" / "sub").mkdir(parents=True)
    (tmp_path / "b" / "model.onnx").write_bytes(b"m")
    (tmp_path / "b" / "sub" / "x.npy").write_bytes(b"x")
    names = regular_files(tmp_path / "b")
    assert names == ["model.onnx", "sub/x.npy"]
    with tarfile.open(fileobj=__import__("io").BytesIO(pack(tmp_path / "b", names))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == names and all(m.isfile() and m.mode == 0o644 and m.uid == 0 for m in members)
    (tmp_path / "b" / "etc").symlink_to("/etc")
    with pytest.raises(TransferError, match="'etc' is a link"):
        regular_files(tmp_path / "b")
    (tmp_path / "b" / "etc").unlink()
    os.mkfifo(tmp_path / "b" / "sub" / "pipe")
    with pytest.raises(TransferError, match="'sub/pipe' is not a regular file"):
        regular_files(tmp_path / "b")


def test_stability_limits():
    from edgerobust.remote.options import Stability

    limits = Stability.from_profile({"max_cv": 0.05, "max_temperature_rise_c": 3}, remeasure=1)
    assert (limits.max_cv, limits.max_temperature_rise_c, limits.remeasure) == (0.05, 3.0, 1)
    assert Stability.from_profile({}, max_cv=None).max_cv == Stability.max_cv
    assert limits.settled({"compute": {"cv": 0.05}, "temperature_rise_c": 3.0}) == (True, "")
    assert limits.settled({"compute": {"cv": 0.051}, "temperature_rise_c": None})[0] is False
    ok, why = limits.settled({"compute": {"cv": 0.01}, "temperature_rise_c": 3.5})
    assert not ok and "temperature rose 3.5" in why
    with pytest.raises(EdgeRobustError):
        Stability.from_profile({}, max_cv=0)
