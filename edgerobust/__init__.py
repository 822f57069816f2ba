"""edgerobust: robust, small image classifiers for edge devices — train, compress, export, measure."""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("edgerobust")
except _metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"

from .errors import EdgeRobustError  # noqa: E402
from .run import RunDir  # noqa: E402

__all__ = ["EdgeRobustError", "RunDir", "__version__"]
