"""onnxruntime sessions as the runner and the host open them, and the optimisers an artifact asks them to skip.

Every session runs all graph optimisations, sequentially, with `threads` intra-op threads. An artifact may name, in
its own metadata (key `DISABLED_KEY`, comma-separated), optimisers from `SKIPPABLE` to leave out: passes that change
memory layouts and nothing else (float results move only by summation order, which every error bound of the
certificates already covers). Export's `--int8-exclude measure` writes it when skipping is faster on the exporting
host: the thin float32 layers of a mixed int8 graph pay for the NCHWc pass's 16-channel blocks and reorders
(benchmarks/product_figure.py). The artifact carries the choice, so its sha256 covers it and every session that
opens it, here or on the device, runs the graph it was measured as. Written for the runner's Python 3.6.
"""
from __future__ import absolute_import

DISABLED_KEY = "onnxruntime_disabled_optimizers"
SKIPPABLE = ("NchwcTransformer",)  # onnxruntime's x86 blocked-layout pass (MLAS NCHWc kernels)


class SkipRefused(ValueError):
    """An artifact asks to skip an optimiser outside `SKIPPABLE`."""


def session_options(ort, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def parse_disabled(text):
    """The optimiser names of an artifact's `DISABLED_KEY` entry; SkipRefused names one outside `SKIPPABLE`."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in SKIPPABLE]
    if unknown:
        raise SkipRefused("the artifact asks onnxruntime to skip {} (only {} may be skipped); re-export it".format(
            ", ".join(unknown), ", ".join(SKIPPABLE)))
    return names


def open_session(ort, path, threads, providers, configure=None):
    """(session, the optimisers it skips): the artifact at `path` opened with `session_options`, then reopened
    without the optimisers its metadata names when it runs on the CPU provider (the layout passes are the CPU
    kernels'; a GPU provider, whose engines are costly to build twice, keeps its session). An onnxruntime too old
    for `disabled_optimizers` keeps the first session (a layout choice only) and says so by skipping none.
    `configure(options)`, when given, adds to the settings of each session opened (e.g. profiling)."""

    def options():
        made = session_options(ort, threads)
        if configure is not None:
            configure(made)
        return made

    session = ort.InferenceSession(path, sess_options=options(), providers=providers)
    meta = session.get_modelmeta().custom_metadata_map or {}
    disabled = parse_disabled(meta.get(DISABLED_KEY))
    first = providers[0][0] if isinstance(providers[0], (tuple, list)) else providers[0]
    if not disabled or first != "CPUExecutionProvider":
        return session, []
    try:
        return ort.InferenceSession(path, sess_options=options(), providers=providers,
                                    disabled_optimizers=disabled), disabled
    except TypeError:  # onnxruntime before disabled_optimizers: the layout pass runs
        return session, []
