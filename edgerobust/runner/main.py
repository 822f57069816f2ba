"""The runner's command line: parse, run one command, print exactly one JSON document, exit 0 / 2 / 1."""
import argparse
import contextlib
import json
import math
import os
import sys
import traceback
from collections import OrderedDict

from . import PACKAGE_DIR_IN_BUNDLE, PROTOCOL, RUNNER_VERSION
from .errors import RunnerError
from .precisions import PRECISIONS


class Parser(argparse.ArgumentParser):
    """argparse that raises a typed `usage` error instead of printing to stderr and exiting."""

    def error(self, message):
        raise RunnerError("usage", "{}; run with --help for the commands and options".format(message))


class Command(object):
    """One runner command: `run(args, context)` returns its result dict; `arguments(subparser)` adds its own options.

    A `model` command also takes the bundle and the model options (--bundle, --precision from the precision table,
    --runtime, --threads, --batch, --build-engine, --cache, --no-hash); its `context` holds the sealed bundle, the
    runtime `Options` and whether to check hashes. Adding a command is one `register(...)` (docs/architecture.md).
    """

    __slots__ = ("name", "run", "arguments", "model", "batch")

    def __init__(self, name, run, arguments=None, model=False, batch=64):
        self.name, self.run, self.arguments, self.model, self.batch = name, run, arguments, model, batch


class Context(object):
    """What a model command runs on: the sealed bundle, the runtime options, whether to check the files' hashes."""

    def __init__(self, bundle, options, hashes):
        self.bundle, self.options, self.hashes = bundle, options, hashes


COMMANDS = OrderedDict()


def register(name, run, arguments=None, model=False, batch=64):
    COMMANDS[name] = Command(name, run, arguments, model, batch)


def build_parser():
    parser = Parser(prog="edgerobust_runner", description="edgerobust device runner (protocol {})".format(PROTOCOL))
    subparsers = parser.add_subparsers(dest="command", parser_class=Parser)
    for command in COMMANDS.values():  # the command, precision and runtime tables, read when the parser is built
        sub = subparsers.add_parser(command.name)
        if command.model:
            sub.add_argument("--bundle")
            sub.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS))
            sub.add_argument("--runtime", default="ort-cpu")  # checked against runtimes.SESSIONS (numpy loads late)
            sub.add_argument("--threads", type=int, default=0)
            sub.add_argument("--batch", type=int, default=command.batch)
            sub.add_argument("--build-engine", action="store_true")
            sub.add_argument("--cache")
            sub.add_argument("--no-hash", action="store_true")
        if command.arguments is not None:
            command.arguments(sub)
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
    command = COMMANDS[args.command]
    if not command.model:
        return command.run(args, None)
    from .runtimes import Options
    from .sealed import open_bundle

    directory = args.bundle or default_bundle()
    if directory is None:
        raise RunnerError("usage", "--bundle is required (this runner is not inside a bundle)")
    bundle = open_bundle(directory)
    options = Options(args.runtime, args.threads, max(args.batch, 1), args.cache, args.build_engine, key_source)
    return command.run(args, Context(bundle, options, not args.no_hash))


def machine_root(args):
    from . import machine

    return machine.Root(args.root or os.environ.get("EDGEROBUST_RUNNER_ROOT"))


def ping(args, context):
    """A no-op: what starting the runner costs, and which runner answers (loads no numpy and no runtime)."""
    import platform

    return {"protocol": PROTOCOL, "runner_version": RUNNER_VERSION, "python": platform.python_version()}


def info(args, context):
    from . import machine
    from .runtimes import availability

    return machine.info(machine_root(args), availability())


def unpack(args, context):
    from .unpack import unpack as unpack_archive

    return unpack_archive(args.archive, args.dest, args.max_bytes)


def verify(args, context):
    from . import commands

    precisions = None if args.precision == "all" else [args.precision]
    return commands.verify(context.bundle, context.options, precisions, golden=not args.no_golden)


def verify_arguments(sub):
    sub.add_argument("--no-golden", action="store_true")
    sub.set_defaults(precision="all")
    sub._option_string_actions["--precision"].choices = tuple(PRECISIONS) + ("all",)


def bench(args, context):
    from . import commands

    return commands.bench(context.bundle, context.options, args, machine_root(args))


def bench_arguments(sub):
    sub.add_argument("--warmup", type=int, default=10)
    sub.add_argument("--repeats", type=int, default=50)
    sub.add_argument("--root")


def replay(args, context):
    from . import commands

    return commands.replay(context.bundle, context.options, args)


def replay_arguments(sub):
    sub.add_argument("--set", action="append", default=[], dest="sets")
    sub.add_argument("--no-clean", action="store_true")
    sub.add_argument("--no-points", action="store_true")


def smooth(args, context):
    from . import commands

    return commands.smooth(context.bundle, context.options, args)


def smooth_arguments(sub):
    sub.add_argument("--sigma", type=float, required=True)
    sub.add_argument("--n", type=int, required=True)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--set", dest="set_spec")
    sub.add_argument("--start", type=int, default=0)
    sub.add_argument("--count", type=int)
    sub.add_argument("--margin-below", type=float)
    sub.add_argument("--phase", default="estimate", choices=("select", "estimate", "predict"))
    sub.add_argument("--noise", default="gaussian", choices=("gaussian", "sound"))
    sub.add_argument("--thresholds", help="with --noise sound: a .npy file of the host's int64 thresholds")


def logits(args, context):
    from . import commands

    return commands.logits(context.bundle, context.options, args)


def logits_arguments(sub):
    sub.add_argument("--set", dest="set_path", required=True)
    sub.add_argument("--rows", type=lambda text: [int(r) for r in text.split(",") if r.strip()])
    sub.add_argument("--samples", type=int)
    sub.add_argument("--eps", type=float)
    sub.add_argument("--norm", default="inf")
    sub.add_argument("--seed", type=int, default=0)


def unpack_arguments(sub):
    sub.add_argument("--archive", required=True)
    sub.add_argument("--dest", required=True)
    sub.add_argument("--max-bytes", type=int, default=4 << 30)


register("ping", ping)
register("info", info, lambda sub: sub.add_argument("--root"))
register("verify", verify, verify_arguments, model=True, batch=64)
register("bench", bench, bench_arguments, model=True, batch=1)
register("replay", replay, replay_arguments, model=True, batch=64)
register("smooth", smooth, smooth_arguments, model=True, batch=64)
register("logits", logits, logits_arguments, model=True, batch=256)
register("unpack", unpack, unpack_arguments)


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
            raise RunnerError("usage", "no command given; choose one of {}".format(", ".join(COMMANDS)))
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
