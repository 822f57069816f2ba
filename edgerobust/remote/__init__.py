"""The remote harness: run the device-side runner (edgerobust/runner) on a device over OpenSSH or in a local
subprocess, copy bundles, gather its JSON and merge it into a run."""
from .connect import make_transport
from .errors import RemoteError
from .hosts import HostSpec, parse_host
from .transport import Transport

__all__ = ["HostSpec", "RemoteError", "Transport", "make_transport", "parse_host"]
