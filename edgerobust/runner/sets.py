"""Evaluation sets on the device: the bundle's clean set and adversarial sets in the shared .npz format.

Format (shared with `evaluate`): x_adv float32 N×C×H×W pixels in [0,1], labels int64, optional indices int64 and
robust bool (the host model's verdict per point). Loaded with allow_pickle=False: data only, never code.
"""
import hashlib
import io
import os

import numpy as np

from .errors import RunnerError


class EvalSet:
    def __init__(self, name, source, x, labels, indices=None, robust=None, sha256=None):
        self.name, self.source, self.x, self.labels = name, source, x, labels
        self.indices, self.robust, self.sha256 = indices, robust, sha256  # sha256: of the .npz file's bytes


def load_npz(path, name, input_shape):
    try:
        with open(path, "rb") as handle:  # read once: the bytes hashed are the bytes loaded
            raw = handle.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise RunnerError("set_invalid", "{} cannot be read as a .npz of arrays ({})".format(path, exc)) from None
    for key in ("x_adv", "labels"):
        if key not in arrays:
            raise RunnerError("set_invalid", "{} has no {} array; it needs x_adv, labels (and optionally indices, "
                                             "robust)".format(path, key))
    x, labels = arrays["x_adv"], arrays["labels"]
    if x.dtype != np.float32 or x.ndim != 4 or (input_shape and list(x.shape[1:]) != list(input_shape)):
        raise RunnerError("set_invalid", "{}: x_adv must be float32 N×{} but is {} {}".format(
            path, "×".join(str(d) for d in input_shape or ["C", "H", "W"]), x.dtype, "×".join(map(str, x.shape))))
    if labels.shape != (len(x),) or labels.dtype.kind not in "iu":
        raise RunnerError("set_invalid", "{}: labels must be {} integers, got {} {}".format(
            path, len(x), labels.dtype, labels.shape))
    indices, robust = arrays.get("indices"), arrays.get("robust")
    for key, value in (("indices", indices), ("robust", robust)):
        if value is not None and value.shape != (len(x),):
            raise RunnerError("set_invalid", "{}: {} must have {} entries".format(path, key, len(x)))
    return EvalSet(name, path, x, labels.astype(np.int64), indices, robust, hashlib.sha256(raw).hexdigest())


def clean_set(bundle):
    """The manifest's replay.clean set when present, else the golden inputs with their labels."""
    entry = (bundle.manifest.get("replay") or {}).get("clean")
    if entry:
        found = load_npz(bundle.path(entry["file"], "replay.clean"), "clean", bundle.manifest.get("input_shape"))
        found.source = entry["file"]
        return found
    golden = bundle.manifest.get("golden") or {}
    if not golden.get("labels"):
        raise RunnerError("bundle_invalid", "the bundle has neither a replay.clean set nor golden labels")
    x = np.load(bundle.path(golden["inputs"], "golden.inputs"), allow_pickle=False)
    labels = np.load(bundle.path(golden["labels"], "golden.labels"), allow_pickle=False)
    return EvalSet("clean", "golden", np.asarray(x, dtype=np.float32), labels.astype(np.int64))


def bundle_sets(bundle):
    """Every adversarial set the bundle carries (replay.<key>, key != clean), in key order."""
    found = []
    for key, entry in sorted((bundle.manifest.get("replay") or {}).items()):
        if key != "clean" and isinstance(entry, dict) and "file" in entry:
            found.append(load_npz(bundle.path(entry["file"], "replay." + key), key,
                                  bundle.manifest.get("input_shape")))
            found[-1].source = entry["file"]
    return found


def choose_set(bundle, spec):
    """`clean`, a replay key of the bundle, or a path to a .npz on the device."""
    if spec in (None, "clean"):
        return clean_set(bundle)
    if spec in (bundle.manifest.get("replay") or {}):
        return [s for s in bundle_sets(bundle) if s.name == spec][0]
    if os.path.isfile(spec):
        return load_npz(spec, os.path.basename(spec), bundle.manifest.get("input_shape"))
    keys = ", ".join(sorted(bundle.manifest.get("replay") or {})) or "none"
    raise RunnerError("usage", "--set {} is neither clean, a replay set of the bundle ({}) nor a .npz file".format(
        spec, keys))
