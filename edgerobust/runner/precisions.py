"""Precisions, as data: one record per precision, the single table host and device both read (Python 3.6+, stdlib).

A record says how the precision stores its values, how a device's outputs in it are judged against the golden
outputs, what TensorRT's builder calls it and whether it needs a calibration set, and names every file of that
precision by one scheme (`file_name`). The runner's `--precision` choices, device profiles, `export`, `bench`,
`replay` and help texts all read `PRECISIONS`; the host adds what only it does (the converter that makes the artifact
from the fp32 ONNX graph, the arithmetic model of the error analysis) in edgerobust/export/precisions.py, keyed by
these names. Adding a precision is one `register(Precision(...))` here plus its host record and converter.
"""
from collections import OrderedDict
from collections.abc import Sequence

# How parity is judged. "derived": every logit within the bundle's derived elementwise bound (tolerance.py), a
# decision differing only near the boundary. "agreement": top-1 agreement with the golden outputs and the accuracy
# drop on the golden labels, within the model entry's limits (parity.py) - for arithmetics without a usable bound.
PARITY_RULES = ("derived", "agreement")
REFERENCE = "fp32"  # the precision every other one is checked against; every profile must list it
# One naming scheme for every per-precision file: <stem>.<precision>.<extension>. The one exception is the reference
# precision's ONNX graph, "model.onnx": the source every other artifact (fp16 graph, TensorRT engines) is made from,
# under the name every bundle since format 1 has used.
FILE_KINDS = {"onnx": ("model", "onnx"), "engine": ("model", "engine"), "tolerance": ("golden_tolerance", "npy")}
REFERENCE_ONNX = "model.onnx"
# How a calibrated precision made at export (onnxruntime's int8) finds its activation ranges on the calibration set:
# onnxruntime's CalibrationMethod names, lower case; the first is the default.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class Precision(object):
    """One precision: name, storage dtype (a numpy dtype name), parity rule, TensorRT builder flag, calibration."""

    __slots__ = ("name", "storage", "parity", "description", "tensorrt_flag", "calibrated")

    def __init__(self, name, storage, parity, description, tensorrt_flag=None, calibrated=False):
        if parity not in PARITY_RULES:
            raise ValueError("precision record {}: parity must be one of {}".format(name, ", ".join(PARITY_RULES)))
        self.name, self.storage, self.parity, self.description = name, storage, parity, description
        self.tensorrt_flag, self.calibrated = tensorrt_flag, calibrated

    def file_name(self, kind):
        """The bundle file of this precision of `kind` (onnx, engine, tolerance)."""
        if kind == "onnx" and self.name == REFERENCE:
            return REFERENCE_ONNX
        stem, extension = FILE_KINDS[kind]
        return "{}.{}.{}".format(stem, self.name, extension)

    def __repr__(self):
        return "Precision({!r}, {!r}, {!r})".format(self.name, self.storage, self.parity)


PRECISIONS = OrderedDict()


class Names(Sequence):
    """The names of a table as a read-only sequence that follows the table (for choices fixed at import time)."""

    def __init__(self, table):
        self.table = table

    def __getitem__(self, index):
        return list(self.table)[index]

    def __len__(self):
        return len(self.table)

    def __repr__(self):
        return repr(tuple(self.table))


NAMES = Names(PRECISIONS)


def register(record):
    if record.name in PRECISIONS:
        raise ValueError("precision {} registered twice".format(record.name))
    PRECISIONS[record.name] = record
    return record


def get(name):
    """The record of `name`; KeyError for an unknown one (callers on each side turn it into their own error)."""
    return PRECISIONS[name]


register(Precision("fp32", "float32", "derived", "IEEE binary32 throughout (the reference)"))
register(Precision("fp16", "float16", "derived", "binary16 weights and arithmetic, float32 input and output",
                   tensorrt_flag="FP16"))
register(Precision("bf16", "bfloat16", "derived", "bfloat16 weights and arithmetic", tensorrt_flag="BF16"))
register(Precision("int8", "int8", "agreement", "8-bit integer weights and activations, scales from a calibration "
                                               "set", tensorrt_flag="INT8", calibrated=True))
register(Precision("fp8", "float8_e4m3fn", "agreement", "8-bit float (E4M3) weights and activations",
                   tensorrt_flag="FP8"))
