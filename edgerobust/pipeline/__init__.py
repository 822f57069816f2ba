"""`edgerobust pipeline`: the whole chain on the built-in default."""
from . import basic_steps  # noqa: F401, I001  (each import registers its steps)
from . import bench_steps  # noqa: F401
from . import certify_steps  # noqa: F401
from . import compress_steps  # noqa: F401
from . import device_steps  # noqa: F401
from . import distill_steps  # noqa: F401
from . import evaluate_steps  # noqa: F401
from . import export_steps  # noqa: F401
from . import precision_steps  # noqa: F401
from . import smooth_steps  # noqa: F401
from .context import PIPELINE_STEPS, PipelineContext, run_steps

__all__ = ["PIPELINE_STEPS", "PipelineContext", "run_steps"]
