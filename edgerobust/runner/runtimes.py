"""Runtimes on the device, chosen by name: onnxruntime with an execution provider, or TensorRT.

What a runtime is (device, precisions, install hint) is its record in runtime_specs.py, the table the host reads too;
this file holds one session class per kind of runtime, registered for the record names it runs with `runs(...)`, and
the runner's `--runtime` choices are exactly those names.

A session has `prepare(batch)` (put a numpy batch where the runtime reads it, outside the timed region), `run(prepared)`
(the runtime call alone; returns when the device has finished) and `infer(batch)` (numpy in, fresh numpy float32
logits out, every copy included) - the two timings of `bench`. The same names as the host's bench runtimes.
"""
import ctypes
import ctypes.util
import time
from collections import OrderedDict

import numpy as np

from .engines import EngineCache, cache_dir, device_facts, make_key
from .errors import RunnerError
from .ort_options import SkipRefused
from .ort_options import open_session as open_ort_session
from .precisions import PRECISIONS
from .runtime_specs import RUNTIME_SPECS

ORT_INSTALL = ("pip install onnxruntime (onnxruntime-gpu for CUDA/TensorRT; on a Jetson, NVIDIA's onnxruntime-gpu "
               "wheel for its JetPack)")
TRT_INSTALL = "on a Jetson install JetPack's python3-libnvinfer; elsewhere pip install tensorrt"
ORT_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                 "ort-tensorrt": "TensorrtExecutionProvider"}
SESSIONS = OrderedDict()  # runtime record name -> the session class that runs it here


def runs(*names):
    """Register a session class as the runner's implementation of the runtime records `names`."""
    def decorator(cls):
        for name in names:
            if name not in RUNTIME_SPECS or name in SESSIONS:
                raise ValueError("runtime {} has no record in runtime_specs.py or is run twice".format(name))
            SESSIONS[name] = cls
        return cls
    return decorator


def runtime_names():
    """The runtimes this runner runs (its `--runtime` choices), in the record table's order."""
    return tuple(name for name in RUNTIME_SPECS if name in SESSIONS)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RunnerError("runtime_missing", "the Python package onnxruntime is not installed on this device ({}); "
                                             "{}".format(exc, ORT_INSTALL)) from None
    return onnxruntime


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise RunnerError("runtime_missing", "the Python package tensorrt is not installed on this device ({}); "
                                             "{}".format(exc, TRT_INSTALL)) from None
    return tensorrt


def availability():
    """{runtime: {"available", "reason"}} for `info`."""
    table = {}
    for name in sorted(runtime_names()):
        reason = SESSIONS[name].unavailable(name)
        table[name] = {"available": not reason, "reason": reason}
    return table


class Options:
    """How to open a model: runtime name, threads, max batch, engine cache directory, build permission, key source."""

    def __init__(self, runtime="ort-cpu", threads=0, max_batch=1, cache=None, build_engine=False, key_source=None):
        if runtime not in SESSIONS:
            raise RunnerError("usage", "unknown runtime {!r}; choose one of {}".format(
                runtime, ", ".join(runtime_names())))
        self.runtime, self.threads, self.max_batch = runtime, int(threads), int(max_batch)
        self.cache, self.build_engine = cache_dir(cache), build_engine
        self.key_source = key_source or device_facts


def open_session(bundle, precision, options):
    """A session for the bundle's `precision` model entry on `options.runtime` (paths already sealed)."""
    entry = bundle.model_entry(precision)
    allowed = entry.get("runtimes")
    if allowed and options.runtime not in allowed:
        raise RunnerError("precision_unavailable", "the bundle's {} model runs on {} only, not {}; choose "
                                                   "--runtime {}".format(precision, ", ".join(allowed),
                                                                         options.runtime, allowed[0]))
    session_class = SESSIONS[options.runtime]
    # a calibrated precision's graph quantized at export (onnxruntime int8: the entry's `quantization`) runs as it is
    if PRECISIONS[precision].calibrated and not entry.get("quantization") and not session_class.calibrates:
        calibrating = [name for name in runtime_names() if SESSIONS[name].calibrates]
        raise RunnerError("precision_unavailable", "{} is calibrated on the device, which {} does not do; choose "
                                                   "--runtime {}".format(precision, options.runtime,
                                                                         " or ".join(calibrating)))
    return session_class.open(bundle, precision, entry, options)


@runs("ort-cpu", "ort-cuda", "ort-tensorrt")
class OrtSession:
    """onnxruntime; GPU providers keep the input on the device through IO binding for the compute timing."""

    calibrates = False  # runs the entry's ONNX graph as it is
    PROVIDERS = ORT_PROVIDERS  # runtime name -> execution provider (a subclass for another provider gives its own)

    @classmethod
    def unavailable(cls, name):
        try:
            providers = import_onnxruntime().get_available_providers()
        except RunnerError as exc:
            return exc.message
        return "" if cls.PROVIDERS[name] in providers else "onnxruntime has no " + cls.PROVIDERS[name]

    @classmethod
    def open(cls, bundle, precision, entry, options):
        return cls(bundle.path(entry["file"], "models." + precision), bundle.artifact(precision)["sha256"],
                   precision, options)

    def __init__(self, path, onnx_sha256, precision, options):
        ort = import_onnxruntime()
        self.runtime_name = options.runtime
        self.provider = self.PROVIDERS[options.runtime]
        if self.provider not in ort.get_available_providers():
            raise RunnerError("provider_unavailable", "onnxruntime {} here has no {} (it has {}); {}".format(
                ort.__version__, self.provider, ", ".join(ort.get_available_providers()), ORT_INSTALL))
        self.engine = None
        providers = [self.provider]
        if options.runtime == "ort-tensorrt":
            providers = [(self.provider, self._trt_options(onnx_sha256, precision, options)), "CPUExecutionProvider"]
        try:
            self.session, self.disabled_optimizers = open_ort_session(ort, path, options.threads, providers)
        except SkipRefused as exc:
            raise RunnerError("bundle_invalid", "{}: {}".format(path, exc)) from None
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise RunnerError("provider_unavailable", "onnxruntime cannot load {} with {} ({})".format(
                path, self.provider, reason)) from None
        active = self.session.get_providers()
        if active[0] != self.provider:  # never report a silent CPU fallback as a GPU figure
            raise RunnerError("provider_unavailable", "onnxruntime fell back to {} for {}; {} could not take the "
                                                      "graph".format(active[0], path, self.provider))
        self.version, self.providers = ort.__version__, active
        self.threads = options.threads
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.on_gpu = self.provider != "CPUExecutionProvider"
        self._ort = ort

    def _trt_options(self, onnx_sha256, precision, options):
        """onnxruntime's own TensorRT engine cache, in a directory named by our key (a key record beside it)."""
        import json
        import os

        from .engines import key_sha256

        key = make_key(onnx_sha256, precision, options.max_batch, options.key_source())
        cache = EngineCache(os.path.join(options.cache, "ort-trt"))
        directory = os.path.join(cache.directory, key_sha256(key))
        key_path = cache.paths(key)[1]
        cached = os.path.exists(key_path)
        if cached:
            with open(key_path) as handle:
                if json.load(handle).get("key") != key:
                    raise RunnerError("engine_key_mismatch", "onnxruntime TensorRT cache {} belongs to another "
                                                             "key; it is never used".format(directory))
        elif not options.build_engine:
            raise RunnerError("engine_missing", "no cached TensorRT engine for this model, precision and device; "
                                                "pass --build-engine to build it here")
        else:
            os.makedirs(directory, exist_ok=True)
            with open(key_path, "w") as handle:
                json.dump({"key": key}, handle, sort_keys=True)
        self.engine = {"key": key, "key_sha256": key_sha256(key), "cached": cached, "build_s": None}
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": directory,
                "trt_fp16_enable": PRECISIONS[precision].tensorrt_flag == "FP16"}

    def prepare(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if not self.on_gpu:
            return batch
        value = self._ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)  # the host-to-device copy happens here
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, "cuda")
        return value, binding

    def run(self, prepared):
        if not self.on_gpu:
            self.session.run([self.output_name], {self.input_name: prepared})
        else:
            self.session.run_with_iobinding(prepared[1])  # synchronises the stream before returning

    def infer(self, batch):
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)  # no copy of a float32 batch in or of the logits out

    def describe(self, batch):
        return {"name": self.runtime_name, "version": self.version, "provider": self.provider,
                "providers": self.providers, "threads": self.threads, "batch": batch, "engine": self.engine,
                "disabled_optimizers": self.disabled_optimizers}

    def close(self):
        self.session = None


class CudaRuntime:
    """The few CUDA runtime calls a TensorRT engine needs, through ctypes (no pycuda or cuda-python on JetPack 4.6)."""

    H2D, D2H = 1, 2

    def __init__(self):
        names = [ctypes.util.find_library("cudart") or "libcudart.so"] + ["libcudart.so.{}".format(v) for v in
                                                                          ("12", "11.0", "10.2")]
        self.lib = None
        for name in names:
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if self.lib is None:
            raise RunnerError("runtime_missing", "libcudart (the CUDA runtime) is not found; install CUDA / JetPack")
        self.stream = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(self.stream)), "cudaStreamCreate")

    def check(self, status, call):
        if status != 0:
            raise RunnerError("engine_build_failed", "CUDA call {} failed with status {}".format(call, status))

    def malloc(self, nbytes):
        pointer = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(pointer), ctypes.c_size_t(nbytes)), "cudaMalloc")
        return pointer

    def copy(self, dst, src, nbytes, kind):
        self.check(self.lib.cudaMemcpy(dst, src, ctypes.c_size_t(nbytes), kind), "cudaMemcpy")

    def sync(self):
        self.check(self.lib.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def free(self, pointer):
        self.lib.cudaFree(pointer)


def _calibrator(trt, cuda, images, batch):
    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.buffer = cuda.malloc(images[:batch].nbytes)

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.index + batch > len(images):
                return None
            chunk = np.ascontiguousarray(images[self.index:self.index + batch], dtype=np.float32)
            cuda.copy(self.buffer, chunk.ctypes.data_as(ctypes.c_void_p), chunk.nbytes, cuda.H2D)
            self.index += batch
            return [int(self.buffer.value)]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, data):
            return None

    return Calibrator()


def build_engine(path, precision, input_shape, max_batch, calibration_path):
    """Parse the ONNX file and build a serialized engine for batch 1..max_batch; (bytes, seconds)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    with open(path, "rb") as handle:
        if not parser.parse(handle.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RunnerError("engine_build_failed", "TensorRT {} cannot parse {}: {}".format(
                trt.__version__, path, errors[:300]))
    config = builder.create_builder_config()
    name = network.get_input(0).name
    profile = builder.create_optimization_profile()
    shape = tuple(input_shape)
    profile.set_shape(name, (1,) + shape, (max_batch,) + shape, (max_batch,) + shape)
    config.add_optimization_profile(profile)
    record = PRECISIONS[precision]
    if record.calibrated:
        if calibration_path is None:
            raise RunnerError("engine_build_failed", "{} needs the bundle's calibration set; export with "
                                                     "--calibration".format(precision))
        with np.load(calibration_path, allow_pickle=False) as data:
            images = np.asarray(data["input"], dtype=np.float32)
        if len(images) < max_batch:
            raise RunnerError("engine_build_failed", "{} needs at least {} calibration inputs".format(
                precision, max_batch))
        config.int8_calibrator = _calibrator(trt, CudaRuntime(), images, max_batch)
        config.set_calibration_profile(profile)
    if record.tensorrt_flag:
        flag = getattr(trt.BuilderFlag, record.tensorrt_flag, None)
        if flag is None:
            raise RunnerError("engine_build_failed", "TensorRT {} has no {} builder flag".format(
                trt.__version__, record.tensorrt_flag))
        config.set_flag(flag)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RunnerError("engine_build_failed", "TensorRT could not build a {} engine for {}".format(precision, path))
    return bytes(serialized), time.perf_counter() - started


@runs("tensorrt")
class TensorRTSession:
    """A TensorRT engine from the cache (built here with --build-engine), run with device buffers through ctypes.

    TensorRT 8.5+ uses named tensors (set_tensor_address / execute_async_v3); older releases (JetPack 4.6 ships
    8.2) use bindings (set_binding_shape / execute_async_v2); both are handled.
    """

    calibrates = True  # builds the engine from the fp32 graph with the precision's builder flag and calibration

    @staticmethod
    def unavailable(name):
        try:
            import_tensorrt()
        except RunnerError as exc:
            return exc.message
        return ""

    @classmethod
    def open(cls, bundle, precision, entry, options):
        calib = entry.get("calibration_file") or (bundle.manifest.get("calibration") or {}).get("file")
        calib_path = bundle.path(calib, "calibration") if PRECISIONS[precision].calibrated and calib else None
        return cls(bundle.path(entry["file"], "models." + precision), bundle.artifact(precision)["sha256"], precision,
                   bundle.manifest.get("input_shape"), options, calib_path)

    def __init__(self, path, onnx_sha256, precision, input_shape, options, calibration_path):
        trt = import_tensorrt()
        if not input_shape:
            raise RunnerError("bundle_invalid", "the manifest has no input_shape; re-export the bundle")
        self.input_shape, self.max_batch, self.threads = tuple(input_shape), options.max_batch, options.threads
        key = make_key(onnx_sha256, precision, options.max_batch, options.key_source())
        cache = EngineCache(options.cache)
        data, self.engine = cache.obtain(key, lambda: build_engine(path, precision, self.input_shape,
                                                                  options.max_batch, calibration_path),
                                         options.build_engine)
        self.cuda = CudaRuntime()
        self.trt_engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
        self.context = self.trt_engine.create_execution_context()
        self.version = trt.__version__
        self.named = hasattr(self.context, "set_tensor_address")
        if self.named:
            names = [self.trt_engine.get_tensor_name(i) for i in range(self.trt_engine.num_io_tensors)]
            inputs = [n for n in names if self.trt_engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.input_name, self.output_name = inputs[0], [n for n in names if n not in inputs][0]
            out_dtype = self.trt_engine.get_tensor_dtype(self.output_name)
        else:
            bindings = range(self.trt_engine.num_bindings)
            self.input_index = [i for i in bindings if self.trt_engine.binding_is_input(i)][0]
            self.output_index = 1 - self.input_index
            out_dtype = self.trt_engine.get_binding_dtype(self.output_index)
        self.out_dtype = np.float16 if out_dtype == trt.float16 else np.float32
        item = int(np.prod(self.input_shape)) * 4
        self.d_input = self.cuda.malloc(item * self.max_batch)
        self.d_output = None

    def _shape(self, batch_size):
        shape = (batch_size,) + self.input_shape
        if self.named:
            self.context.set_input_shape(self.input_name, shape)
            out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        else:
            self.context.set_binding_shape(self.input_index, shape)
            out_shape = tuple(self.context.get_binding_shape(self.output_index))
        nbytes = int(np.prod(out_shape)) * np.dtype(self.out_dtype).itemsize
        if self.d_output is None or self.d_output_bytes < nbytes:
            self.d_output, self.d_output_bytes = self.cuda.malloc(nbytes), nbytes
        return out_shape

    def prepare(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) > self.max_batch:
            raise RunnerError("usage", "batch {} exceeds the engine's max batch {}".format(len(batch), self.max_batch))
        out_shape = self._shape(len(batch))
        self.cuda.copy(self.d_input, batch.ctypes.data_as(ctypes.c_void_p), batch.nbytes, self.cuda.H2D)
        return out_shape

    def run(self, out_shape):
        if self.named:
            self.context.set_tensor_address(self.input_name, self.d_input.value)
            self.context.set_tensor_address(self.output_name, self.d_output.value)
            ok = self.context.execute_async_v3(self.cuda.stream.value or 0)
        else:
            bindings = [0, 0]
            bindings[self.input_index], bindings[self.output_index] = self.d_input.value, self.d_output.value
            ok = self.context.execute_async_v2(bindings, self.cuda.stream.value or 0)
        if not ok:
            raise RunnerError("internal", "TensorRT execution failed")
        self.cuda.sync()

    def infer(self, batch):
        out_shape = self.prepare(batch)
        self.run(out_shape)
        out = np.empty(out_shape, dtype=self.out_dtype)
        self.cuda.copy(out.ctypes.data_as(ctypes.c_void_p), self.d_output, out.nbytes, self.cuda.D2H)
        return out.astype(np.float32)

    def describe(self, batch):
        return {"name": "tensorrt", "version": self.version, "provider": "TensorRT", "providers": ["TensorRT"],
                "threads": self.threads, "batch": batch, "engine": self.engine}

    def close(self):
        for pointer in (self.d_input, self.d_output):
            if pointer is not None:
                self.cuda.free(pointer)
        self.d_input = self.d_output = None
