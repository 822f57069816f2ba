"""The TensorRT engine cache's key logic and refusals, with an injected key source (no TensorRT or GPU needed)."""
import shutil

import pytest

from edgerobust.runner.engines import KEY_FIELDS, EngineCache, key_sha256, make_key
from edgerobust.runner.errors import RunnerError

NANO = {"tensorrt_version": "8.2.1", "gpu_name": "NVIDIA Tegra X1", "compute_capability": "5.3"}


class Builds:
    """A fake engine builder that counts its calls and returns bytes naming the build."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return f"engine #{self.calls}".encode(), 0.5


def kind(call):
    with pytest.raises(RunnerError) as info:
        call()
    return info.value.kind, info.value.message


def test_key_holds_every_field_and_each_one_changes_it():
    key = make_key("a" * 64, "fp16", 8, NANO)
    assert sorted(key) == sorted(KEY_FIELDS)
    for field, other in (("onnx_sha256", "b" * 64), ("precision", "int8"), ("tensorrt_version", "8.2.2"),
                         ("gpu_name", "NVIDIA Orin"), ("compute_capability", "8.7"), ("max_batch", 16)):
        assert key_sha256({**key, field: other}) != key_sha256(key), field


def test_a_device_that_cannot_tell_its_gpu_cannot_key_an_engine():
    got, message = kind(lambda: make_key("a" * 64, "fp16", 8, {**NANO, "compute_capability": None}))
    assert got == "engine_build_failed" and "compute_capability" in message


def test_build_once_then_reuse(tmp_path):
    cache, build = EngineCache(tmp_path), Builds()
    key = make_key("a" * 64, "fp16", 8, NANO)
    assert kind(lambda: cache.obtain(key, build, allow_build=False))[0] == "engine_missing"
    data, info = cache.obtain(key, build, allow_build=True)
    assert data == b"engine #1" and info["cached"] is False and info["key_sha256"] == key_sha256(key)
    data, info = cache.obtain(key, build, allow_build=False)
    assert data == b"engine #1" and info["cached"] is True and build.calls == 1


def test_another_devices_engine_is_never_used(tmp_path):
    cache, build = EngineCache(tmp_path), Builds()
    nano = make_key("a" * 64, "fp16", 8, NANO)
    orin = make_key("a" * 64, "fp16", 8, {**NANO, "gpu_name": "NVIDIA Orin", "compute_capability": "8.7"})
    cache.obtain(nano, build, allow_build=True)
    assert kind(lambda: cache.obtain(orin, build, allow_build=False))[0] == "engine_missing"
    # the Nano's engine planted under the Orin's name (a copied cache, a collision): refused, naming the fields
    for src, dst in zip(cache.paths(nano), cache.paths(orin), strict=True):
        shutil.copyfile(src, dst)
    got, message = kind(lambda: cache.obtain(orin, build, allow_build=False))
    assert got == "engine_key_mismatch" and "compute_capability" in message and "gpu_name" in message
    data, info = cache.obtain(orin, build, allow_build=True)  # rebuilt for this key, never the planted one
    assert data == b"engine #2" and info["cached"] is False
    assert cache.obtain(orin, build, allow_build=False)[0] == b"engine #2"


def test_a_changed_engine_file_or_key_record_is_refused(tmp_path):
    cache, build = EngineCache(tmp_path), Builds()
    key = make_key("a" * 64, "int8", 4, NANO)
    cache.obtain(key, build, allow_build=True)
    engine_path, key_path = cache.paths(key)
    with open(engine_path, "ab") as handle:
        handle.write(b"!")
    assert "sha256" in kind(lambda: cache.lookup(key))[1]
    cache.obtain(key, build, allow_build=True)
    with open(key_path, "w") as handle:
        handle.write("{broken")
    assert kind(lambda: cache.lookup(key))[0] == "engine_key_mismatch"


def test_the_runner_refuses_through_its_command_line(runner_bundle, tmp_path):
    """ort-tensorrt keys onnxruntime's own cache directory the same way; here no TensorRT EP exists, so the
    runner must say so before touching the cache."""
    from runner_helpers import error_kind

    error_kind(["bench", "--bundle", runner_bundle, "--runtime", "ort-tensorrt", "--cache", tmp_path],
               "provider_unavailable")
    assert not (tmp_path / "ort-trt").exists()
