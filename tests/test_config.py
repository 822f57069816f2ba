"""The config layer: one dataclass per recipe section, one number parser, one-line errors for every bad value."""
from __future__ import annotations

import math
import typing
from dataclasses import asdict, fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgerobust import config as cfg
from edgerobust.cli import app
from edgerobust.compress.api import configs_from_recipe
from edgerobust.config import (
    NESTED,
    SECTIONS,
    AdversarialConfig,
    ConfigError,
    EvaluateConfig,
    TrainConfig,
    build,
    parse_number,
    section,
)
from edgerobust.recipe import builtin_recipes, load_recipe
from edgerobust.training.api import adversarial_from_recipe, config_from_recipe

ALL_SECTIONS = [(name, cls) for name, cls in SECTIONS.items()] + [
    (f"{outer}.{inner}", cls) for outer, nested in NESTED.items() for inner, cls in nested.items()]


@pytest.mark.parametrize("text, value", [("0.1", 0.1), ("8/255", 8 / 255), ("25%", 0.25), ("1e-3", 1e-3),
                                         (" 3/4 ", 0.75), (2, 2.0), (0.5, 0.5), ("1/3%", 1 / 300)])
def test_one_number_parser(text, value):
    assert parse_number(text) == value  # exact: Fraction arithmetic, then one rounding


@pytest.mark.parametrize("text", ["abc", "1/0", "1e400", "nan", "inf", True, "", None, [0.1]])
def test_number_parser_refuses(text):
    with pytest.raises(ConfigError, match="eps"):
        parse_number(text, "eps")


@pytest.mark.parametrize("recipe", builtin_recipes())
def test_builtin_recipes_round_trip(recipe):
    """Every key of every built-in recipe lands in its dataclass, and the dataclass gives the same config back."""
    spec = load_recipe(recipe)
    for name, cls in ALL_SECTIONS:
        outer, _, inner = name.partition(".")
        table = spec.get(outer, {})
        if inner:
            table = table.get(inner, {}) if isinstance(table, dict) else {}
        if outer not in spec or (inner and not table):
            continue
        config = section(spec, name)
        plain = {k: v for k, v in table.items() if k not in NESTED.get(name, {})}
        for key, value in plain.items():
            got = getattr(config, key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert got == pytest.approx(value, rel=0, abs=0)
            elif not isinstance(value, str) or key not in ("eps",):
                assert got == value or (isinstance(value, str) and got == parse_number(value)), (name, key)
        assert build(cls, asdict(config), name) == config


def _value_for(tp):
    """A valid non-default value of a field type, for the round trip of every key."""
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_value_for(item)]
    if origin is dict:
        return {"layer": 0.5}
    return {bool: True, int: 3, float: 0.25, str: "x"}[tp]


@pytest.mark.parametrize("name, cls", ALL_SECTIONS, ids=[n for n, _ in ALL_SECTIONS])
def test_every_key_round_trips_and_cli_equals_recipe(name, cls):
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        value = f.metadata["choices"][0] if f.metadata.get("choices") else _value_for(hints[f.name])
        try:
            from_recipe = build(cls, {f.name: value}, name)
        except ConfigError:
            continue  # a value that another key constrains (e.g. a threshold needs method l1)
        assert getattr(from_recipe, f.name) == value
        assert build(cls, {}, name, overrides={f.name: value}) == from_recipe  # the command line says the same
        assert build(cls, asdict(from_recipe), name) == from_recipe


def test_the_cli_and_the_recipe_give_the_same_train_and_adversarial_config():
    recipe = {"origin": "test", "train": {"epochs": 3, "lr": 0.01, "seed": 7},
              "adversarial": {"method": "fgsm-rs", "eps": "8/255"}}
    assert config_from_recipe(recipe) == config_from_recipe({}, {"epochs": 3, "lr": 0.01, "seed": 7})
    assert adversarial_from_recipe(recipe) == adversarial_from_recipe({}, {"method": "fgsm-rs", "eps": "8/255"})
    assert adversarial_from_recipe({}) is None  # no section, nothing given: natural training


@pytest.mark.parametrize("table, where", [({"evaluate": {"eps": "8/255"}}, "evaluate"),
                                          ({"compress": {"adversarial": {"eps": "8/255"}}}, "compress.adversarial"),
                                          ({"adversarial": {"eps": "8/255"}}, "adversarial")])
def test_fractions_work_in_every_section(table, where):
    assert section({"origin": "t", **table}, where).eps == 8 / 255


@pytest.mark.parametrize("recipe, message", [
    ({"trian": {"epochs": 2}}, r"unknown section\(s\) \[trian\]"),
    ({"train": {"epochs": 1.5}}, r"\[train\] epochs = 1.5 must be a whole number"),
    ({"train": {"epochs": 0}}, r"\[train\] epochs = 0 must be at least 1"),
    ({"train": {"bogus_key": 1}}, r"\[train\]: unknown key\(s\) bogus_key"),
    ({"data": {"nmae": "digits"}}, r"\[data\]: unknown key\(s\) nmae"),
    ({"train": {"weight_decay": -1}}, r"weight_decay = -1(\.0)? must be at least 0"),
    ({"train": {"seed": 2**70}}, r"seed = \d+ must be less than"),
    ({"train": {"augment": "yes"}}, r"augment = 'yes' must be true or false"),
    ({"evaluate": {"eps": "eight"}}, r"\[evaluate\] eps = 'eight' is not a number"),
    ({"evaluate": {"n": 0}}, r"\[evaluate\] n = 0 must be at least 1"),
    ({"evaluate": {"batch_size": 0}}, r"batch_size = 0 must be at least 1"),
    ({"compress": {"adversarial": {"eps": "x"}}}, r"\[compress.adversarial\] eps = 'x' is not a number"),
    ({"compress": {"keep": [0.5, 1.5]}}, r"keep = 1.5 is outside \(0, 1\]"),
    ({"bench": {"batches": [1, 0]}}, r"batches\[1\] = 0 must be at least 1"),
    ({"export": "x86-cpu"}, r"\[export\] must be a table"),
    ({"adversarial": {"eps": 1e400}}, r"eps = inf is not a finite number"),
])
def test_bad_recipes_are_one_line_naming_section_and_key(tmp_path, recipe, message):
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(_toml(recipe)))
    with pytest.raises(ConfigError, match=message) as info:
        load_recipe(path)
    assert "\n" not in str(info.value)


def _toml(table, prefix=""):
    lines, subs = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            subs.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {_literal(value)}")
    out = lines
    for name, sub in subs:
        out += ["", f"[{name}]", *_toml(sub, f"{name}.")]
    return out


def _literal(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b"[train]\n# caf\xe9\nepochs = 2\n")
    with pytest.raises(cfg.EdgeRobustError, match="not UTF-8"):
        load_recipe(path)


def test_compress_grids_are_kept_whole_and_the_pipeline_refuses_them(tmp_path):
    recipe = load_recipe("marshall-resnet34-c10")
    config, _, adv, _ = configs_from_recipe(recipe)
    assert config.keep == [0.5, 0.1] and adv.eps == [0.03, 0.1]  # the whole grid, not its first value
    from edgerobust.pipeline import PipelineContext, run_steps

    ctx = PipelineContext(out=tmp_path / "p", recipe=recipe, progress=False)
    with pytest.raises(cfg.EdgeRobustError, match="is a grid; the pipeline compresses one model"):
        run_steps(ctx, ["compress"])
    assert not (tmp_path / "p").exists()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALL_SECTIONS), st.data())
def test_bad_values_never_give_a_traceback(section_and_cls, data):
    """Any value for any key either builds or is a ConfigError: never TypeError, ValueError or a crash."""
    name, cls = section_and_cls
    key = data.draw(st.sampled_from([f.name for f in fields(cls)] + ["not_a_key"]))
    value = data.draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                                st.text(max_size=8), st.lists(st.integers(), max_size=3),
                                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
    try:
        build(cls, {key: value}, f"[{name}]")
    except ConfigError as exc:
        assert "\n" not in str(exc) and (key in str(exc) or name in str(exc))


def test_train_config_validate_checks_registry_names():
    import edgerobust.training  # noqa: F401  (loads the schedule registry)

    with pytest.raises(ConfigError, match="unknown lr schedule 'cosin'"):
        TrainConfig(schedule="cosin").validate()
    with pytest.raises(ConfigError, match="optimizer = 'adamw' is not one of: sgd, adam"):
        TrainConfig(optimizer="adamw").validate()


def test_fgsm_rs_without_random_start_is_honoured():
    from edgerobust.training.api import adversarial_training

    loss, _ = adversarial_training(AdversarialConfig(method="fgsm-rs", eps=0.1, random_init=False), 2)
    assert loss.random_init is False and loss.describe()["random_init"] is False


def test_cli_errors_show_section_names_literally(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nbogus_key = 1\n")
    result = CliRunner().invoke(app, ["train", "--recipe", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "[train]: unknown key(s) bogus_key" in result.output
    assert not (tmp_path / "run").exists()


def test_evaluate_defaults_are_defined_once():
    """The CLI's help shows the dataclass defaults; evaluate_run takes them from the same dataclass."""
    result = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert f"(default: {EvaluateConfig().steps})" in " ".join(result.output.split())  # wherever the lines wrap
    import inspect

    from edgerobust.evaluation.api import evaluate_run

    assert "steps" not in inspect.signature(evaluate_run).parameters  # no second default to drift
