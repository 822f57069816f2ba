"""The runner's command line: parse, run one command, print exactly one JSON document, exit 0 / 2 / 1."""
import argparse
import contextlib
import json
import math
import os
import sys
import traceback

from . import PACKAGE_DIR_IN_BUNDLE, PROTOCOL, RUNNER_VERSION
from .errors import RunnerError

PRECISIONS = ("fp32", "fp16", "int8")


class Parser(argparse.ArgumentParser):
    """argparse that raises a typed `usage` error instead of printing to stderr and exiting."""

    def error(self, message):
        raise RunnerError("usage", "{}; run with --help for the commands and options".format(message))


def build_parser():
    parser = Parser(prog="edgerobust_runner", description="edgerobust device runner (protocol {})".format(PROTOCOL))
    commands = parser.add_subparsers(dest="command", parser_class=Parser)

    def model_command(name, batch):
        sub = commands.add_parser(name)
        sub.add_argument("--bundle")
        sub.add_argument("--precision", default="fp32", choices=PRECISIONS)
        sub.add_argument("--runtime", default="ort-cpu")
        sub.add_argument("--threads", type=int, default=0)
        sub.add_argument("--batch", type=int, default=batch)
        sub.add_argument("--build-engine", action="store_true")
        sub.add_argument("--cache")
        sub.add_argument("--no-hash", action="store_true")
        return sub

    commands.add_parser("ping")
    info = commands.add_parser("info")
    info.add_argument("--root")
    verify = model_command("verify", 64)
    verify.add_argument("--no-golden", action="store_true")
    verify.set_defaults(precision="all")
    verify._option_string_actions["--precision"].choices = PRECISIONS + ("all",)
    bench = model_command("bench", 1)
    bench.add_argument("--warmup", type=int, default=10)
    bench.add_argument("--repeats", type=int, default=50)
    bench.add_argument("--root")
    replay = model_command("replay", 64)
    replay.add_argument("--set", action="append", default=[], dest="sets")
    replay.add_argument("--no-clean", action="store_true")
    replay.add_argument("--no-points", action="store_true")
    smooth = model_command("smooth", 64)
    smooth.add_argument("--sigma", type=float, required=True)
    smooth.add_argument("--n", type=int, required=True)
    smooth.add_argument("--seed", type=int, default=0)
    smooth.add_argument("--set", dest="set_spec")
    smooth.add_argument("--start", type=int, default=0)
    smooth.add_argument("--count", type=int)
    smooth.add_argument("--margin-below", type=float)
    smooth.add_argument("--phase", default="estimate", choices=("select", "estimate", "predict"))
    unpack = commands.add_parser("unpack")
    unpack.add_argument("--archive", required=True)
    unpack.add_argument("--dest", required=True)
    unpack.add_argument("--max-bytes", type=int, default=4 << 30)
    return parser


def default_bundle():
    """The bundle this runner sits in (BUNDLE/edgerobust_runner/), if it is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    parent = os.path.dirname(here)
    if os.path.basename(here) == PACKAGE_DIR_IN_BUNDLE and os.path.isfile(os.path.join(parent, "manifest.json")):
        return parent
    return None


def execute(args, key_source=None):
    """Run the parsed command and return its result dict (RunnerError on failure)."""
    if args.command == "ping":  # a no-op: what starting the runner costs, and which runner answers
        import platform

        return {"protocol": PROTOCOL, "runner_version": RUNNER_VERSION, "python": platform.python_version()}
    from . import machine

    if args.command == "info":
        from .runtimes import availability

        return machine.info(machine.Root(args.root or os.environ.get("EDGEROBUST_RUNNER_ROOT")), availability())
    if args.command == "unpack":
        from .unpack import unpack

        return unpack(args.archive, args.dest, args.max_bytes)
    from . import commands
    from .runtimes import Options
    from .sealed import open_bundle

    directory = args.bundle or default_bundle()
    if directory is None:
        raise RunnerError("usage", "--bundle is required (this runner is not inside a bundle)")
    bundle = open_bundle(directory)
    options = Options(args.runtime, args.threads, max(args.batch, 1), args.cache, args.build_engine, key_source)
    hashes = not args.no_hash
    if args.command == "verify":
        precisions = None if args.precision == "all" else [args.precision]
        return commands.verify(bundle, options, precisions, golden=not args.no_golden)
    if args.command == "bench":
        root = machine.Root(args.root or os.environ.get("EDGEROBUST_RUNNER_ROOT"))
        return commands.bench(bundle, options, args.precision, args.batch, args.warmup, args.repeats, root, hashes)
    if args.command == "replay":
        return commands.replay(bundle, options, args.precision, args.batch, args.sets, not args.no_clean,
                               not args.no_points, hashes)
    return commands.smooth(bundle, options, args.precision, args.sigma, args.n, args.batch, args.seed,
                           args.set_spec, args.start, args.count, args.margin_below, hashes, args.phase)


@contextlib.contextmanager
def stdout_to_stderr():
    """While a command runs, anything printed (by Python or by a runtime's C++ code) goes to stderr, so stdout
    carries only the JSON document."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no real file descriptor 1 (embedded, closed)
        saved = None
    if saved is None:
        yield
        return
    previous = sys.stdout
    sys.stdout = sys.stderr
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = previous


def envelope(command, result=None, error=None):
    doc = {"protocol": PROTOCOL, "ok": error is None, "command": command, "runner_version": RUNNER_VERSION}
    if error is None:
        doc["result"] = result
    else:
        doc["error"] = error
    return doc


def main(argv=None, stdout=None, key_source=None):
    """Run one command; print one JSON document; return the exit code (0 ok, 2 typed error, 1 internal)."""
    stdout = stdout or sys.stdout
    command = None
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        command = args.command
        if command is None:
            raise RunnerError("usage", "no command given; choose ping, info, verify, bench, replay, smooth or unpack")
        with stdout_to_stderr():
            result = execute(args, key_source)
        doc, code = envelope(command, result), 0
    except RunnerError as exc:
        doc, code = envelope(command, error={"kind": exc.kind, "message": exc.message}), 2
    except KeyboardInterrupt:
        doc, code = envelope(command, error={"kind": "internal", "message": "interrupted"}), 1
    except SystemExit:  # --help: argparse printed the help text (to stdout) and wants to exit
        raise
    except Exception as exc:  # a bug: still one JSON document, with the exception named
        traceback.print_exc(file=sys.stderr)
        message = "{}: {}".format(type(exc).__name__, exc)
        doc, code = envelope(command, error={"kind": "internal", "message": " ".join(message.split())[:500]}), 1
    stdout.write(json.dumps(finite(doc), allow_nan=False, default=_json_default) + "\n")
    stdout.flush()
    return code


def finite(value):
    """Strict JSON: a NaN or infinite float (e.g. the margins of a model that outputs NaN) becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError("not JSON serialisable: {!r}".format(type(value)))
