"""The runner's one error type: a typed `kind` (docs/runner-protocol.md lists them) and a one-line message."""

KINDS = ("usage", "python_too_old", "bundle_missing", "bundle_invalid", "unsafe_path", "bundle_modified",
         "parity_failed", "precision_unavailable", "runtime_missing", "provider_unavailable", "engine_missing",
         "engine_key_mismatch", "engine_build_failed", "set_invalid", "archive_invalid", "io_error", "internal")


class RunnerError(Exception):
    """A failure the host can act on: printed as {"ok": false, "error": {"kind", "message"}}, exit 2."""

    def __init__(self, kind, message):
        if kind not in KINDS:
            raise ValueError("unknown runner error kind " + repr(kind))
        super().__init__(message)
        self.kind = kind
        self.message = " ".join(str(message).split())  # one line
