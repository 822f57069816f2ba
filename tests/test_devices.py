"""Device profiles: the built-ins, finding profiles by name or path, validation naming the bad field, the CLI."""
from __future__ import annotations

import pytest
from cli_helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

from edgerobust import tomlfile
from edgerobust.devices import list_profiles, load_profile, profile_from_dict
from edgerobust.devices.catalog import profile_names
from edgerobust.devices.profile import ProfileError, parse_bytes
from edgerobust.errors import EdgeRobustError, UnknownNameError

REQUIRED = {"x86-cpu", "jetson-nano", "jetson-nano-cpu", "jetson-orin-nano", "v100", "a100", "h100", "h200"}


def _builtin(name: str) -> dict:
    from importlib import resources

    return tomlfile.loads((resources.files("edgerobust.devices") / "profiles" / f"{name}.toml").read_text())


def test_builtin_profiles_cover_the_issue_and_load():
    names = {p.name for p in list_profiles()}
    assert REQUIRED <= names
    for name in REQUIRED:
        profile = load_profile(name)
        assert profile.name == name and profile.runtimes and "fp32" in profile.precisions
        assert profile.memory_budget_bytes > 0 and profile.python.startswith("3.")
        assert profile.power, f"{name} says nothing about power/thermal state"


def test_jetson_nano_facts():
    nano = load_profile("jetson-nano")
    assert nano.accelerator == "gpu" and nano.arch == "aarch64" and nano.compute_capability == "5.3"
    assert nano.runtimes[0] == "tensorrt" and nano.software["tensorrt"].startswith("8.2")
    assert nano.precisions == ["fp32", "fp16"]  # no INT8
    assert nano.max_opset <= 13 and nano.python == "3.6"
    assert nano.memory_budget_bytes <= 4 * 2**30
    assert nano.power["read"] == "tegrastats" and set(nano.power["modes"]) == {"MAXN", "5W"}
    cpu = load_profile("jetson-nano-cpu")
    assert cpu.accelerator == "cpu" and cpu.runtimes == ["ort-cpu"] and cpu.threads == 4
    assert "fp8" in load_profile("h100").precisions and "fp8" not in load_profile("a100").precisions


def test_load_by_path_and_user_directory_override(tmp_path, monkeypatch):
    data = _builtin("x86-cpu")
    data["threads"] = 2
    path = tmp_path / "x86-cpu.toml"
    path.write_text(_to_toml(data))
    assert load_profile(path).threads == 2
    assert load_profile(str(path)).source == str(path)
    monkeypatch.setenv("EDGEROBUST_DEVICES", str(tmp_path))
    assert load_profile("x86-cpu").threads == 2  # a user file replaces the built-in of the same name
    (tmp_path / "my-board.toml").write_text(_to_toml({**data, "name": "my-board"}))
    assert "my-board" in profile_names()
    monkeypatch.delenv("EDGEROBUST_DEVICES")
    assert load_profile("x86-cpu").threads == 0


def test_unknown_target_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid targets: .*jetson-nano"):
        load_profile("jetson-nanoo")


def test_file_name_must_match_profile_name(tmp_path, monkeypatch):
    (tmp_path / "board.toml").write_text(_to_toml({**_builtin("x86-cpu"), "name": "other"}))
    monkeypatch.setenv("EDGEROBUST_DEVICES", str(tmp_path))
    with pytest.raises(ProfileError, match="field 'name'"):
        load_profile("board")


BAD_FIELDS = [
    ("max_opset", lambda d: d.update(max_opset="13")),
    ("max_opset", lambda d: d.update(max_opset=99)),
    ("runtimes", lambda d: d.update(runtimes=["tensorrt", "coreml"])),
    ("runtimes", lambda d: d.update(runtimes=[])),
    ("precisions", lambda d: d.update(precisions=["fp16"])),
    ("precisions", lambda d: d.update(precisions=["fp32", "int4"])),
    ("memory_budget", lambda d: d.update(memory_budget="lots")),
    ("memory_budget", lambda d: d.pop("memory_budget")),
    ("name", lambda d: d.pop("name")),
    ("name", lambda d: d.update(name="Jetson Nano")),
    ("arch", lambda d: d.update(arch="sparc")),
    ("accelerator", lambda d: d.update(accelerator="tpu")),
    ("compute_capability", lambda d: d.pop("compute_capability")),
    ("operator_set", lambda d: d.update(operator_set="tensorrt-2")),
    ("python", lambda d: d.update(python="py3")),
    ("threads", lambda d: d.update(threads=-1)),
    ("threads", lambda d: d.update(threads=True)),
    ("power", lambda d: d.update(power="tegrastats")),
    ("max_opsett", lambda d: d.update(max_opsett=13)),
    ("latency_budget_ms", lambda d: d.update(latency_budget_ms=0)),
    ("latency_budget_ms", lambda d: d.update(latency_budget_ms="20 ms")),
    ("latency_budget_ms", lambda d: d.update(latency_budget_ms=True)),
    ("latency_budget_ms", lambda d: d.update(latency_budget_ms={"one": 20})),
    ("latency_budget_ms", lambda d: d.update(latency_budget_ms={"0": 20})),
    ("latency_budget_ms", lambda d: d.update(latency_budget_ms={"8": -1})),
    ("latency_budget_ms", lambda d: d.update(latency_budget_ms=float("inf"))),
    ("stability", lambda d: d.update(stability=0.1)),
    ("stability.max_cv", lambda d: d.update(stability={"max_cv": 0})),
    ("stability.max_cv", lambda d: d.update(stability={"max_cv": "low"})),
    ("stability.max_temperature_rise_c", lambda d: d.update(stability={"max_temperature_rise_c": -2})),
    ("stability.remeasure", lambda d: d.update(stability={"remeasure": 1.5})),
    ("stability.remeasure", lambda d: d.update(stability={"remeasure": -1})),
    ("stability.remeasure", lambda d: d.update(stability={"remeasure": True})),
    ("stability.max_spread", lambda d: d.update(stability={"max_spread": 1})),
    ("power.max_cv", lambda d: d["power"].update(max_cv=0.1)),
    ("power.latency_budget_ms", lambda d: d["power"].update(latency_budget_ms=20)),
]


@pytest.mark.parametrize("field,mutate", BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_FIELDS)])
def test_malformed_profile_names_the_bad_field(field, mutate):
    data = _builtin("jetson-nano")
    mutate(data)
    with pytest.raises(ProfileError) as info:
        profile_from_dict(data, "my.toml")
    message = str(info.value)
    assert f"field '{field}'" in message and "my.toml" in message and "\n" not in message


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(bad)
    with pytest.raises(EdgeRobustError, match="does not exist"):
        load_profile(tmp_path / "missing.toml")


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB"]))
def test_memory_sizes_parse_exactly(number, unit):
    factor = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
    assert parse_bytes(f"{number} {unit}", "x") == number * factor
    assert parse_bytes(f"{number}{unit.lower()}", "x") == number * factor
    assert parse_bytes(number, "x") == number


def test_cli_devices_list_show_validate(tmp_path):
    code, out, _ = run_cli("devices", "list")
    assert code == 0
    for name in ("x86-cpu", "h200", "v100"):
        assert name in out
    code, out, _ = run_cli("devices", "show", "jetson-nano")
    assert code == 0 and "tegrastats" in out and "8.2.1" in out
    code, text, _ = run_cli("devices", "show", "jetson-nano", "--toml")
    assert code == 0
    mine = tmp_path / "mine.toml"
    mine.write_text(text.replace('name = "jetson-nano"', 'name = "mine"'))
    code, out, _ = run_cli("devices", "validate", mine)
    assert code == 0 and "valid profile for 'mine'" in " ".join(out.split())  # rich wraps long paths anywhere
    code, out, _ = run_cli("devices", "show", mine, "--json")
    assert code == 0 and '"max_opset": 13' in out


def test_cli_validate_bad_profile_is_one_line(tmp_path):
    data = _builtin("x86-cpu")
    data["precisions"] = ["fp32", "fp64"]
    bad = tmp_path / "bad.toml"
    bad.write_text(_to_toml(data))
    code, out, err = run_cli("devices", "validate", bad)
    assert code == 2 and "field 'precisions'" in err and "fp64" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = run_cli("devices", "show", "nope")
    assert code == 2 and "valid targets" in err


def _to_toml(data: dict) -> str:
    """Enough TOML for profiles (strings, ints, lists, one level of tables)."""
    import json

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{key}]")
            lines += [f'"{k}" = {value(v)}' for k, v in table.items() if not isinstance(v, dict)]
            for sub, inner in table.items():
                if isinstance(inner, dict):
                    lines.append(f"[{key}.{sub}]")
                    lines += [f'"{k}" = {value(v)}' for k, v in inner.items()]
    return "\n".join(lines) + "\n"


def test_a_profile_may_list_only_deployable_runtime_records():
    from edgerobust.devices import RUNTIME_SPECS, profile_runtimes

    data = _builtin("x86-cpu")
    data["runtimes"] = ["ort-cpu", "torch-compile-cuda"]  # a bench-only comparison, not a way to deploy
    with pytest.raises(ProfileError, match="runtimes.*'torch-compile-cuda'.*valid values: ort-cpu"):
        profile_from_dict(data)
    assert [n for n in RUNTIME_SPECS if RUNTIME_SPECS.get(n).deployable] == sorted(profile_runtimes())


def test_latency_budget_and_stability_limits_are_profile_fields(tmp_path, monkeypatch):
    data = {**_builtin("x86-cpu"), "name": "my-board", "latency_budget_ms": 12.5}
    assert profile_from_dict(data).latency_budget_ms == {1: 12.5}
    data.update(latency_budget_ms={"8": 90, "1": 20}, stability={"max_cv": 0.05, "max_temperature_rise_c": 3,
                                                                  "remeasure": 0})
    (tmp_path / "my-board.toml").write_text(_to_toml(data))
    monkeypatch.setenv("EDGEROBUST_DEVICES", str(tmp_path))
    profile = load_profile("my-board")  # through a real TOML file: table keys are strings there
    assert profile.latency_budget_ms == {1: 20.0, 8: 90.0} and list(profile.latency_budget_ms) == [1, 8]
    assert profile.latency_budget(8) == 90.0 and profile.latency_budget(4) is None
    assert profile.stability == {"max_cv": 0.05, "max_temperature_rise_c": 3.0, "remeasure": 0}
    assert isinstance(profile.stability["max_temperature_rise_c"], float)
    from edgerobust.remote.options import Stability

    limits = Stability.from_profile(profile.stability)
    assert (limits.max_cv, limits.max_temperature_rise_c, limits.remeasure) == (0.05, 3.0, 0)
    assert Stability.from_profile(profile.stability, remeasure=4, max_cv=None).remeasure == 4  # an option wins
    defaults = Stability.from_profile(load_profile("jetson-nano").stability)  # built-ins set none: the defaults
    assert (defaults.max_cv, defaults.remeasure) == (Stability.max_cv, Stability.remeasure)
    code, text, _ = run_cli("devices", "show", str(tmp_path / "my-board.toml"))
    assert code == 0 and "latency budget, batch 8" in text and "stability: max_cv" in text


def test_builtin_profiles_set_no_budget_the_references_do_not_give():
    """devices.md gives no latency budgets, so no built-in profile invents one."""
    for name in REQUIRED:
        assert load_profile(name).latency_budget_ms == {}
