"""The runtimes edgerobust knows, as data: the runner's record table (edgerobust/runner/runtime_specs.py), served
here as the `RUNTIME_SPECS` registry that device profiles, `edgerobust bench` (its `RUNTIMES` registry implements
exactly these names) and help texts read. The records live in the runner package because the device reads them too.
"""
from __future__ import annotations

from ..registry import Registry
from ..runner import runtime_specs
from ..runner.runtime_specs import DEVICE_KINDS, INPUT_FORMATS, RuntimeSpec, profile_runtimes, runtimes_taking

RUNTIME_SPECS: Registry[RuntimeSpec] = Registry("runtime", items=runtime_specs.RUNTIME_SPECS)

__all__ = ["DEVICE_KINDS", "INPUT_FORMATS", "RUNTIME_SPECS", "RuntimeSpec", "profile_runtimes", "runtimes_taking"]
