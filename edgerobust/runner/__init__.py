"""The device-side runner: a self-contained program shipped in every bundle (docs/runner-protocol.md).

It needs only the Python standard library, numpy and one runtime (onnxruntime or tensorrt), runs on Python 3.6
(JetPack 4.6 on a Jetson Nano) up to the newest Python, and imports nothing from edgerobust outside this package:
every import here is relative, so the package also runs under the name `edgerobust_runner` inside a bundle.
"""

RUNNER_VERSION = "1.0.0"
PROTOCOL = 1
PACKAGE_DIR_IN_BUNDLE = "edgerobust_runner"


def runner_files():
    """(relative name, absolute path) of every file the runner needs on a device: its own .py files."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    return [(name, os.path.join(here, name)) for name in sorted(os.listdir(here))
            if name.endswith(".py") and os.path.isfile(os.path.join(here, name))]
