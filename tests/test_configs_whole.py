"""Configs passed whole (issue 21): `--recipe` on export, evaluate and bench with options over it, a recipe section
added by registration alone, one set of device defaults, and no public entry point over six parameters."""
from __future__ import annotations

import importlib
import inspect
import json
import shutil
from dataclasses import dataclass, fields, is_dataclass

import pytest
from cli_helpers import run_cli

from edgerobust import config as cfg
from edgerobust.config import (
    SECTIONS,
    BenchConfig,
    ConfigError,
    DeviceConfig,
    ExportConfig,
    build,
    register_section,
    section,
    setting,
    validated,
)
from edgerobust.recipe import load_recipe
from edgerobust.run import RunDir

# The modules whose public functions and classes are entry points: each api.py, the remote and fleet calls, the
# trainer, the runner's commands. A dataclass is a config (its fields are settings), not an entry point.
ENTRY_MODULES = ("edgerobust.bench.api", "edgerobust.evaluation.api", "edgerobust.export.api", "edgerobust.remote.api",
                 "edgerobust.remote.fleet", "edgerobust.remote.options", "edgerobust.training.api",
                 "edgerobust.training.loop", "edgerobust.compress.api", "edgerobust.runner.commands",
                 "edgerobust.imports.weights", "edgerobust.imports.onnx_file")
MAX_PARAMETERS = 6


def entry_points():
    for name in ENTRY_MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj):
                yield f"{name}.{attr}", obj
            elif inspect.isclass(obj) and not is_dataclass(obj):
                yield f"{name}.{attr}", obj.__init__
                for method, function in vars(obj).items():
                    if inspect.isfunction(function) and not method.startswith("_"):
                        yield f"{name}.{attr}.{method}", function


def parameter_count(function) -> int:
    """Every parameter a caller can pass: positional, keyword-only, *args and **kwargs (self and cls excluded)."""
    params = list(inspect.signature(function).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return len(params)


def test_no_public_entry_point_takes_more_than_six_parameters():
    points = dict(entry_points())
    assert {"edgerobust.bench.api.bench_run", "edgerobust.remote.fleet.run_fleet",
            "edgerobust.training.loop.Trainer", "edgerobust.runner.commands.smooth"} <= set(points)
    over = {name: parameter_count(f) for name, f in points.items() if parameter_count(f) > MAX_PARAMETERS}
    assert over == {}, f"pass the section's dataclass instead of its fields: {over}"


def test_the_parameter_count_sees_keyword_only_and_variadic_parameters():
    def wide(a, b, *args, c=1, d=2, **kwargs):
        return a

    def narrow(self, a, *, b=1):
        return a

    assert parameter_count(wide) == 6 and parameter_count(narrow) == 2


def test_device_defaults_are_written_once():
    from edgerobust.remote.options import Stability

    device = DeviceConfig()
    assert (device.warmup, device.repeats) == (5, 30)
    assert (Stability.max_cv, Stability.max_temperature_rise_c, Stability.remeasure) == \
        tuple(cfg.STABILITY_LIMITS[k] for k in ("max_cv", "max_temperature_rise_c", "remeasure"))
    # a None stability field means "the profile's, else the built-in": an option overrides, the profile fills in
    limits = Stability.from_profile({"remeasure": 4}, **DeviceConfig(max_cv=0.5).stability)
    assert (limits.max_cv, limits.remeasure) == (0.5, 4)
    from edgerobust.cli.remote import reach_overrides

    given = build(DeviceConfig, overrides=reach_overrides("u@h", None, None, "work", True, 30.0))
    assert (given.host, given.root, given.insecure_host_key, given.timeout) == ("u@h", "work", True, 30.0)


def test_a_config_made_in_python_is_checked_like_a_recipe():
    assert validated(ExportConfig(golden=8)) == ExportConfig(golden=8)
    with pytest.raises(ConfigError, match=r"\[export\] golden = 0 must be at least 1"):
        validated(ExportConfig(golden=0))
    with pytest.raises(ConfigError, match=r"\[bench\] batches is empty"):
        validated(BenchConfig(batches=[]))


@pytest.fixture
def registered_section():
    """A recipe section added the way docs/architecture.md says: a dataclass and one register_section line."""

    @dataclass
    class GreetConfig:
        """[greet]: a section a later feature adds."""
        words: int = setting(3, ge=1, help="words to say")
        loud: bool = setting(False, help="shout")

    register_section("greet", GreetConfig)
    yield GreetConfig
    del SECTIONS["greet"]


def test_a_registered_section_is_read_checked_and_overridden(registered_section, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[greet]\nwords = 5\n")
    spec = load_recipe(recipe)
    assert section(spec, "greet") == registered_section(words=5)
    assert section(spec, "greet", overrides={"loud": True, "words": None}) == registered_section(words=5, loud=True)
    recipe.write_text("[greet]\nwords = 0\n")
    with pytest.raises(ConfigError, match=r"\[greet\] words = 0 must be at least 1"):
        load_recipe(recipe)  # checked on load, before any command runs
    assert [f.name for f in fields(registered_section)] == ["words", "loud"]


@pytest.fixture
def run_copy(digits_run, tmp_path):
    shutil.copytree(digits_run.path, tmp_path / "run")
    return tmp_path / "run"


def test_export_reads_the_recipe_and_options_override_it(run_copy, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[export]\ntarget = "x86-cpu"\ngolden = 8\ncalibration = 0\n')
    code, out, err = run_cli("export", run_copy, "--recipe", recipe, "--out", tmp_path / "a", "-q")
    assert code == 0, err
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["golden"]["count"] == 8 and manifest["calibration"] is None
    code, out, err = run_cli("export", run_copy, "--recipe", recipe, "--golden", "4", "--out", tmp_path / "b", "-q")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["golden"]["count"] == 4 and manifest["calibration"] is None  # the option wins, the rest stays


def test_evaluate_reads_the_recipe_and_options_override_it(run_copy, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[evaluate]\nsuite = "none"\nattacks = ["fgsm"]\nminimal = "none"\nmasking_checks = false\n'
                      "n = 16\neps = 0.05\n")
    code, out, err = run_cli("evaluate", run_copy, "--recipe", recipe, "-q")
    assert code == 0, err
    first = json.loads((run_copy / "robustness.json").read_text())
    assert (first["n"], first["eps"], first["settings"]["attacks"], first["settings"]["suite"]) == \
        (16, 0.05, ["fgsm"], "none")
    code, out, err = run_cli("evaluate", run_copy, "--recipe", recipe, "--n", "8", "-q")
    assert code == 0, err
    second = json.loads((run_copy / "robustness.json").read_text())
    assert (second["n"], second["eps"], second["settings"]["attacks"]) == (8, 0.05, ["fgsm"])
    assert set(second["results"]) == {first["key"], second["key"]} and first["key"] != second["key"]


def test_bench_reads_the_recipe_and_options_override_it(run_copy, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[bench]\ntarget = "x86-cpu"\nruntimes = ["torch-cpu"]\nbatches = [2]\nrepeats = 3\n'
                      "warmup = 0\nthreads = 1\nmemory = false\n")
    code, out, err = run_cli("bench", run_copy, "--recipe", recipe, "-q")
    assert code == 0, err
    record = json.loads((run_copy / "bench.json").read_text())
    assert (record["batches"], record["repeats"], record["warmup"], list(record["runtimes"])) == \
        ([2], 3, 0, ["torch-cpu"])
    code, out, err = run_cli("bench", run_copy, "--recipe", recipe, "--batch", "1", "--repeats", "2", "-q")
    assert code == 0, err
    record = json.loads((run_copy / "bench.json").read_text())
    assert (record["batches"], record["repeats"], record["threads"]) == ([1], 2, 1)
    assert RunDir.open(run_copy).manifest["bench"]["p50_ms"].keys() == {"torch-cpu@1"}
