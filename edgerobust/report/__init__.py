"""Run reports: Markdown sections registered per capability, PNG plots."""
from . import training  # noqa: F401, I001  (registers the training section first)
from . import robustness  # noqa: F401  (attacks and robustness evaluation)
from . import export  # noqa: F401,E402  (ONNX export per target)
from . import precisions  # noqa: F401,E402  (robustness per exported precision)
from . import bench  # noqa: F401,E402  (latency per runtime and batch size)
from . import compression  # noqa: F401,E402  (per-layer compression, histograms, trade-off)
from . import devices  # noqa: F401,E402  (on-device latency and robustness gap)
from . import certify  # noqa: F401,E402  (certificates for the artifacts)
from . import smoothing  # noqa: F401,E402  (randomized smoothing certificates)
from . import distillation  # noqa: F401,E402  (teacher against student)
from .render import render_report
from .sections import REPORT_SECTIONS, md_table, register_section

__all__ = ["REPORT_SECTIONS", "md_table", "register_section", "render_report"]
