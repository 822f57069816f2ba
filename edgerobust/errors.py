"""User-facing errors: one line that says what is wrong and how to fix it."""


class EdgeRobustError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits 2."""

    def __str__(self) -> str:  # one line, even when it quotes a library's multi-line message
        return " ".join(super().__str__().split())


class UnknownNameError(EdgeRobustError, KeyError):
    def __init__(self, kind: str, name: str, valid):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} '{name}'; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.args[0]


class CheckpointError(EdgeRobustError):
    """A checkpoint that is missing, corrupt, unsafe, or for another architecture."""


class DataError(EdgeRobustError):
    """Missing or malformed dataset files."""


class ShapeError(EdgeRobustError):
    """An input shape a model cannot take."""
