"""The TensorRT engine cache: an engine is used only on the exact device and software it was built for.

Key = (ONNX sha256, precision, TensorRT version, GPU name, compute capability, max batch); files live at
CACHE/engines/<key_sha256>.engine with <key_sha256>.json holding the key and the engine's sha256. The device facts
come from a key source (a callable), so the key logic and the refusal are tested without TensorRT or a GPU.
"""
import ctypes
import ctypes.util
import hashlib
import json
import os
import tempfile

from .errors import RunnerError

KEY_FIELDS = ("onnx_sha256", "precision", "tensorrt_version", "gpu_name", "compute_capability", "max_batch")
DEFAULT_CACHE = os.path.join("~", ".cache", "edgerobust-runner")


def cache_dir(option=None):
    return os.path.expanduser(option or os.environ.get("EDGEROBUST_RUNNER_CACHE") or DEFAULT_CACHE)


def make_key(onnx_sha256, precision, max_batch, facts):
    """The cache key from the model and the device facts {tensorrt_version, gpu_name, compute_capability}."""
    key = {"onnx_sha256": onnx_sha256, "precision": precision, "max_batch": int(max_batch),
           "tensorrt_version": facts.get("tensorrt_version"), "gpu_name": facts.get("gpu_name"),
           "compute_capability": facts.get("compute_capability")}
    missing = [name for name in KEY_FIELDS if key[name] in (None, "")]
    if missing:
        raise RunnerError("engine_build_failed", "cannot key a TensorRT engine: this device does not tell its {}; "
                                                 "check the GPU driver and TensorRT install".format(", ".join(missing)))
    return key


def key_sha256(key):
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _write_atomic(path, data):
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".engine.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class EngineCache:
    """Look up, refuse or store serialized engines under one cache directory."""

    def __init__(self, directory):
        self.directory = os.path.join(directory, "engines")

    def paths(self, key):
        stem = os.path.join(self.directory, key_sha256(key))
        return stem + ".engine", stem + ".json"

    def lookup(self, key):
        """The engine's bytes when cached for exactly this key; None when absent; RunnerError when it differs."""
        engine_path, key_path = self.paths(key)
        if not os.path.exists(engine_path) and not os.path.exists(key_path):
            return None
        try:
            with open(key_path, "r") as handle:
                record = json.load(handle)
            with open(engine_path, "rb") as handle:
                data = handle.read()
        except (OSError, ValueError):
            message = "cached engine {} has no readable key record; it is not used (pass --build-engine to rebuild it)"
            raise RunnerError("engine_key_mismatch", message.format(engine_path)) from None
        recorded = record.get("key") if isinstance(record, dict) else None
        if recorded != key:
            differs = sorted(k for k in KEY_FIELDS if not isinstance(recorded, dict) or recorded.get(k) != key[k])
            raise RunnerError("engine_key_mismatch", "cached engine {} was built for another {} ; it is never used "
                                                     "here (pass --build-engine to rebuild)".format(
                                                         engine_path, ", ".join(differs) or "key"))
        if hashlib.sha256(data).hexdigest() != record.get("engine_sha256"):
            raise RunnerError("engine_key_mismatch", "cached engine {} does not match its recorded sha256; it is not "
                                                     "used (pass --build-engine to rebuild)".format(engine_path))
        return data

    def store(self, key, data, build_s):
        engine_path, key_path = self.paths(key)
        _write_atomic(engine_path, data)
        record = {"key": key, "engine_sha256": hashlib.sha256(data).hexdigest(), "build_s": build_s}
        _write_atomic(key_path, json.dumps(record, sort_keys=True).encode("utf-8"))
        return engine_path

    def obtain(self, key, build, allow_build):
        """(engine bytes, info): the cached engine for `key`, or a fresh `build()` when allowed."""
        try:
            data = self.lookup(key)
        except RunnerError:
            if not allow_build:
                raise
            data = None
        if data is not None:
            return data, {"key": key, "key_sha256": key_sha256(key), "cached": True, "build_s": None}
        if not allow_build:
            raise RunnerError("engine_missing", "no cached TensorRT engine for this model, precision and device; "
                                                "pass --build-engine to build it here")
        data, build_s = build()
        self.store(key, data, build_s)
        return data, {"key": key, "key_sha256": key_sha256(key), "cached": False, "build_s": build_s}


def _load_library(names):
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def tensorrt_version():
    """TensorRT's version from the Python package, else from libnvinfer (getInferLibVersion: 8201 -> 8.2.1)."""
    try:
        import tensorrt

        return tensorrt.__version__
    except ImportError:
        pass
    lib = _load_library([ctypes.util.find_library("nvinfer") or "libnvinfer.so"] +
                        ["libnvinfer.so.{}".format(v) for v in (10, 8, 7)])
    if lib is None:
        return None
    number = int(lib.getInferLibVersion())
    major, rest = divmod(number, 10000) if number >= 100000 else divmod(number, 1000)  # 10.x: 100300 = 10.3.0
    return "{}.{}.{}".format(major, rest // 100, rest % 100)


def cuda_gpu():
    """(name, compute capability) of CUDA device 0 through the driver API (libcuda), or (None, None)."""
    lib = _load_library([ctypes.util.find_library("cuda") or "libcuda.so", "libcuda.so.1"])
    if lib is None or lib.cuInit(0) != 0:
        return None, None
    device = ctypes.c_int()
    if lib.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None, None
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, device)
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
    return name.value.decode("utf-8", "replace"), "{}.{}".format(major.value, minor.value)


def device_facts():
    """The real key source: TensorRT version and the GPU as the CUDA driver reports it (else as `info` sees it)."""
    name, capability = cuda_gpu()
    if name is None or capability is None:
        from .machine import Root, gpu, jetson

        root = Root()
        seen = gpu(root, jetson(root)) or {}
        name, capability = name or seen.get("name"), capability or seen.get("compute_capability")
    return {"tensorrt_version": tensorrt_version(), "gpu_name": name, "compute_capability": capability}
