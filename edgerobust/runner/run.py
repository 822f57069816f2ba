"""Start the runner from its files: `python3 BUNDLE/edgerobust_runner/run.py COMMAND [options]`.

Loads the package beside this file under the name `edgerobust_runner` (whatever its directory is called) and takes
this directory off sys.path, so none of the package's modules can shadow a standard one. Written so that old
Pythons can parse it and answer with the protocol's `python_too_old` error instead of a traceback.
"""
import json
import os
import sys


def _too_old():
    version = "%d.%d.%d" % tuple(sys.version_info[:3])
    sys.stdout.write(json.dumps({"protocol": 1, "ok": False, "command": None, "runner_version": None,
                                 "error": {"kind": "python_too_old",
                                           "message": "the runner needs Python 3.6 or newer, this is Python "
                                                      + version + "; install python3 (3.6+) on the device"}}) + "\n")
    return 2


def _load():
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    name = "edgerobust_runner"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(here, "__init__.py"),
                                                      submodule_search_locations=[here])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return importlib.import_module(name + ".main")


if __name__ == "__main__":
    sys.dont_write_bytecode = True  # never add __pycache__ to a sealed bundle
    if sys.version_info < (3, 6):
        sys.exit(_too_old())
    sys.exit(_load().main())
