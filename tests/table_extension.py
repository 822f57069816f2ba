"""A precision (tf32) and a runtime (ort-cpu-seq) added from outside edgerobust, the way docs/architecture.md says to
add one: a runner record and a host record plus its converter for the precision; a runtime record and one class on
each side that runs it. Nothing else is edited. `install(setitem)` puts them in the tables (a test passes
monkeypatch.setitem so they are gone afterwards); `python -c "import table_extension; table_extension.install(); ..."`
does the same for a CLI run in a subprocess."""
import numpy as np

from edgerobust.bench import runtimes as bench_runtimes
from edgerobust.export import precisions as host_precisions
from edgerobust.export.arithmetic import Arithmetic
from edgerobust.runner import precisions as runner_precisions
from edgerobust.runner import runtime_specs
from edgerobust.runner import runtimes as runner_runtimes

PRECISION = "tf32"
RUNTIME = "ort-cpu-seq"

# The shared half: storage, parity rule, TensorRT flag (file names follow from the name).
RECORD = runner_precisions.Precision(PRECISION, "float32", "derived", "TensorFloat-32 arithmetic, float32 storage",
                                     tensorrt_flag="TF32")
# The host half: the converter (the fp32 graph, run with TF32 math), its arithmetic model, the export parity limit.
HOST = host_precisions.HostPrecision(
    PRECISION, {"onnx": host_precisions.same_graph},
    Arithmetic(PRECISION, 2.0 ** -11, 0.0, 2.0 ** -11, 2.0 ** -150, float(np.finfo(np.float32).max)),
    tolerance=1e-2, tolerance_kind="relative")
SPEC = runtime_specs.RuntimeSpec(RUNTIME, "onnxruntime, CPU execution provider (a second record, for the tests)",
                                 "cpu", ("fp32", "fp16", PRECISION), "onnx", "pip install onnxruntime")


class HostOrtSequential(bench_runtimes._OrtRuntime):
    """The host's implementation (bench)."""

    provider = "CPUExecutionProvider"


class RunnerOrtSequential(runner_runtimes.OrtSession):
    """The runner's implementation (device)."""

    PROVIDERS = {RUNTIME: "CPUExecutionProvider"}


def install(setitem=lambda table, key, value: table.__setitem__(key, value)):
    setitem(runner_precisions.PRECISIONS, PRECISION, RECORD)
    setitem(host_precisions.HOST_PRECISIONS, PRECISION, HOST)
    setitem(runtime_specs.RUNTIME_SPECS, RUNTIME, SPEC)
    setitem(runner_runtimes.SESSIONS, RUNTIME, RunnerOrtSequential)
    setitem(bench_runtimes.RUNTIMES._items, RUNTIME, bench_runtimes.implementing(HostOrtSequential, RUNTIME))


def profile_data(base: dict) -> dict:
    """A target profile listing the new runtime first and the new precision."""
    base = {key: value for key, value in base.items() if key != "int8"}  # [int8] goes with int8 in precisions
    return {**base, "name": "x86-tables", "aliases": [], "runtimes": [RUNTIME, "ort-cpu"],
            "precisions": ["fp32", PRECISION]}
