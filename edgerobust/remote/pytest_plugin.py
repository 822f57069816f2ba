"""A pytest plugin (entry point `pytest11`, so installing edgerobust provides it) that runs the device checks against a
real board:

    pytest --edge-host ubuntu@nano --edge-target jetson-nano --edge-bundle runs/x/export-jetson-nano \\
           --edge-latency-ms 20

It adds `device_checks.py` (beside this file) to the session: golden-output parity per precision, p50 latency within
the budget, and replay accuracy within `--edge-max-gap` of the host's. Without --edge-host it does nothing.
"""
from __future__ import annotations

from pathlib import Path

CHECKS = Path(__file__).with_name("device_checks.py")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("edgerobust", "edgerobust device checks")
    group.addoption("--edge-host", help="the device: user@host[:port], an ~/.ssh/config alias or local[:PYTHON]")
    group.addoption("--edge-target", help="its device profile (name or .toml)")
    group.addoption("--edge-bundle", help="the bundle exported for that target")
    group.addoption("--edge-python", help="the Python on the device (default python3)")
    group.addoption("--edge-ssh-config", help="an ssh_config file for ssh -F (refused when it runs local commands or "
                                              "changes host-key checks, unless --edge-trust-ssh-config)")
    group.addoption("--edge-trust-ssh-config", action="store_true", default=False,
                    help="use --edge-ssh-config even though it runs local commands or changes host-key checks")
    group.addoption("--edge-device-dir", help="work directory on the device")
    group.addoption("--edge-latency-ms", type=float,
                    help="p50 latency budget at batch 1, replacing the profile's latency_budget_ms "
                         "(default: the profile's budgets, per batch)")
    group.addoption("--edge-max-gap", type=float, default=0.02,
                    help="largest accepted |host − device| accuracy on a replayed set (default 0.02)")


def pytest_configure(config) -> None:
    if not config.getoption("--edge-host"):
        return
    import pytest

    for name in ("--edge-target", "--edge-bundle"):
        if not config.getoption(name):
            raise pytest.UsageError(f"--edge-host needs {name}")
    if config.getoption("--edge-ssh-config"):
        from ..errors import EdgeRobustError
        from .ssh_config import check_ssh_config

        try:
            risks = check_ssh_config(config.getoption("--edge-ssh-config"), "--edge-ssh-config",
                                     config.getoption("--edge-trust-ssh-config"))
        except EdgeRobustError as exc:
            raise pytest.UsageError(str(exc).replace("--trust-ssh-config", "--edge-trust-ssh-config")) from None
        if risks:
            config.issue_config_time_warning(pytest.PytestConfigWarning(
                f"--edge-ssh-config is trusted and sets: {'; '.join(risks)}"), stacklevel=2)
    config.args.append(str(CHECKS))
