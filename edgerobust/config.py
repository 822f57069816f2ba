"""One config layer: a dataclass per recipe section, its keys, types and defaults written once.

The CLI, the recipes (TOML) and the pipeline all build their settings here, through `build(cls, values, where)`:
unknown keys, wrong types and out-of-range values are one `ConfigError` line naming the section and key, and every
number goes through one parser (`parse_number`: 0.1, 8/255, 25%). A field's type annotation says how its value is
read; its metadata (`setting(...)`) holds the bounds and the help text. Sections that a command does not run are
still checked when a recipe is loaded, so a misspelt key fails before any work.

Names that registries own (schedules, schemes, attacks) are checked by the code that looks them up; this bottom
layer only knows the fixed choices.
"""
from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from fractions import Fraction
from typing import Any, TypeVar, Union

from .errors import EdgeRobustError
from .names import check_name as check_file_name
from .registry import REGISTRIES
from .runner.precisions import CALIBRATION_METHODS
from .runner.precisions import NAMES as PRECISION_NAMES

C = TypeVar("C")
SEED_LIMIT = 2**63  # torch and numpy both take seeds below this
NATURAL_METHODS = ("none", "natural", "")  # [adversarial] method values that mean natural training
ADVERSARIAL_METHODS = ("pgd", "pgd-at", "fgsm", "fgsm-rs", "trades", "none", "natural")


class ConfigError(EdgeRobustError):
    """A recipe or command-line setting with an unknown key, a wrong type or a value out of range."""


@dataclass(frozen=True)
class Given:
    """A command-line value with the option it came from, for the options not named after their key (`--queries`
    sets `square_queries`): errors then name the option the user typed."""
    value: Any
    flag: str


def given(value: Any, flag: str) -> Given | None:
    """`value` labelled with its option `flag`; None (not given) stays None."""
    return None if value is None else Given(value, flag)


def setting(default: Any = MISSING, *, help: str = "", ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, choices: tuple[str, ...] | None = None,
            grid: bool = False, registry: str | None = None) -> Any:
    """A dataclass field with bounds (`ge`, `gt`, `le`, `lt`), fixed `choices`, whether a list means a grid, and the
    registry its value names (checked where that registry is loaded)."""
    metadata = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "grid": grid,
                "registry": registry}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------------- reading values

def parse_number(value: Any, where: str = "value") -> float:
    """A finite real number from 0.1, 8/255, 25% or 1e-3 (a TOML or Python number, or text)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r} is not a number (use e.g. 0.1, 8/255 or 25%)")
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        else:
            text = str(value).strip()
            number = float(Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text))
    except (ValueError, ZeroDivisionError, TypeError):
        raise ConfigError(f"{where} = {value!r} is not a number (use e.g. 0.1, 8/255 or 25%)") from None
    except OverflowError:
        raise ConfigError(f"{where} = {value!r} is too large to be a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} = {value!r} is not a finite number")
    return number


def parse_int(value: Any, where: str = "value") -> int:
    """A whole number: a TOML/Python int, or text of one; 1.5 and true are refused."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ConfigError(f"{where} = {value!r} must be a whole number")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where} = {value!r} must be a whole number") from None


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` read as type annotation `tp` (bool, int, float, str, list[...], dict[str, ...], X | None)."""
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        lists = [a for a in options if typing.get_origin(a) is list]
        if isinstance(value, (list, tuple)) and lists:
            return coerce(value, lists[0], where)
        scalars = [a for a in options if typing.get_origin(a) is not list] or options
        return coerce(value, scalars[0], where)
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r} must be a list, e.g. [1, 2]")
        (item,) = typing.get_args(tp) or (Any,)
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r} must be a table of name = value")
        _, item = typing.get_args(tp) or (str, Any)
        return {str(k): coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} must be true or false")
        return value
    if tp is int:
        return parse_int(value, where)
    if tp is float:
        return parse_number(value, where)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r} must be text (in quotes)")
        return value
    return value


def _check_bounds(value: Any, meta: Mapping[str, Any], where: str) -> None:
    values = value if isinstance(value, list) and meta.get("grid") else [value]
    for v in values:
        if v is None:
            continue
        if meta.get("choices") and v not in meta["choices"]:
            raise ConfigError(f"{where} = {v!r} is not one of: {', '.join(meta['choices'])}")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        for key, ok, word in (("ge", v >= (meta.get("ge") or 0), "at least"), ("gt", v > (meta.get("gt") or 0),
                              "greater than"), ("le", v <= (meta.get("le") or 0), "at most"),
                              ("lt", v < (meta.get("lt") or 0), "less than")):
            if meta.get(key) is not None and not ok:
                raise ConfigError(f"{where} = {v!r} must be {word} {meta[key]:g}")


def keys(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def build(cls: type[C], values: Mapping[str, Any] | None = None, where: str = "", *,
          overrides: Mapping[str, Any] | None = None, base: C | None = None) -> C:
    """An instance of section dataclass `cls` from `values` (a recipe table) and `overrides` (command-line values;
    None means "not given"), on top of `base` or the defaults. `where` names the section in errors ("[train]")."""
    values = dict(values or {})
    unknown = sorted(set(values) - keys(cls))
    renamed = [f"{old} is now {new}" for old, new in getattr(cls, "RENAMED", {}).items() if old in unknown]
    if renamed:  # an old spelling: say what it became
        raise ConfigError(f"{where or cls.__name__}: {'; '.join(renamed)} (rename the key)")
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}; valid keys: "
                          f"{', '.join(sorted(keys(cls)))}")
    labels = {k: f"{where} {k}".strip() for k in keys(cls)}  # where each value came from, for errors
    given = {k: (v, labels[k]) for k, v in values.items()}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in keys(cls):
            raise ConfigError(f"unknown setting {k} for {where or cls.__name__}")
        v, labels[k] = (v.value, v.flag) if isinstance(v, Given) else (v, f"--{k.replace('_', '-')}")
        given[k] = (v, labels[k])
    hints = typing.get_type_hints(cls)
    current = asdict(base) if base is not None else {}
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in given:
            value, label = given[f.name]
            tp = hints[f.name]
            if f.metadata.get("grid") and isinstance(value, (list, tuple)):
                if not value:
                    raise ConfigError(f"{label} is an empty list; give one value or a list of values")
                tp = list[tp]  # type: ignore[valid-type]
            kwargs[f.name] = coerce(value, tp, label)
            _check_bounds(kwargs[f.name], f.metadata, label)
            if f.metadata.get("registry") and kwargs[f.name] is not None:  # None: not chosen (a default applies)
                check_name(f.metadata["registry"], kwargs[f.name], label)
        elif f.name in current:
            kwargs[f.name] = current[f.name]
    instance = cls(**kwargs)
    check = getattr(instance, "check", None)
    if check is not None:
        check(labels.__getitem__)
    return instance


def validated(config: C) -> C:
    """A section made in Python (`ExportConfig(golden=8)`, `dataclasses.replace`) re-read through `build`, so the
    library checks its bounds and cross-field rules as it checks a recipe's; a built one passes unchanged."""
    cls = type(config)
    name = next((n for n, c in SECTIONS.items() if c is cls), cls.__name__)
    return build(cls, asdict(config), f"[{name}]")


def option_help(cls: type, name: str, text: str | None = None) -> str:
    """A command-line option's help from the field's help text and its default, so help never goes stale."""
    f = next(f for f in fields(cls) if f.name == name)
    default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    shown = "none" if default is None or default == [] else (f"{default:.4g}" if isinstance(default, float)
                                                             else str(default).lower() if isinstance(default, bool)
                                                             else str(default))
    text = text or f.metadata.get("help", "")
    text = text[:1].upper() + text[1:]
    return text if "(default:" in text else f"{text} (default: {shown})"  # a None default says what it means


def check_name(kind: str, name: str, where: str) -> None:
    """A registry name checked against its registry, where the code that owns it has been loaded."""
    registry = REGISTRIES.get(kind)
    if registry is not None and name not in registry:
        raise ConfigError(f"{where}: unknown {kind} '{name}'; valid {kind}s: {', '.join(registry.names())}")


def grid_values(value: Any) -> list[Any]:
    """A grid field's values as a list (a single value is a grid of one)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ---------------------------------------------------------------------------------------------------- the sections

@dataclass
class ModelSection:
    """[model]: the network to build (see `edgerobust models`): a zoo spec, an installed entry point's name, or your
    own `package.module:factory` called with `kwargs`, taking [0,1] pixels (or inputs normalised by mean/std)."""
    spec: str = setting("scnn2:16-32", help="model spec, e.g. scnn2:16-32, resnet20 or package.module:factory")
    kwargs: dict[str, Any] = setting({}, help="keyword arguments of your model's factory")
    mean: list[float] | None = setting(None, help="per-channel mean your model's inputs are normalised with")
    std: list[float] | None = setting(None, help="per-channel std your model's inputs are normalised with")
    pca: dict[str, Any] | None = setting(None, help="Song's PCA first layer for smoothing, fitted on the training "
                                         "split: { sigma = 0.25, k = 5 } keeps the components with variance above "
                                         "sigma^2/k ({ components = N } the first N)")

    def options(self) -> dict[str, Any]:
        """What `TrainSetup.model_options` (and CompressSetup's, ImportSetup's) takes."""
        return {"kwargs": dict(self.kwargs), "mean": self.mean, "std": self.std} | \
            ({"pca": dict(self.pca)} if self.pca is not None else {})


@dataclass
class DataSection:
    """[data]: the dataset (built-in digits and synthetic; mnist, cifar10, cifar100, svhn from disk)."""
    name: str = setting("digits", help="dataset name")
    root: str | None = setting(None, help="directory holding on-disk datasets")
    options: dict[str, Any] = setting({}, help="dataset options, e.g. synthetic's shape and classes")


@dataclass
class TrainConfig:
    """[train]: optimisation settings of the one training loop (training/loop.py)."""
    epochs: int = setting(10, ge=1, help="training epochs")
    batch_size: int = setting(64, ge=1, help="batch size")
    optimizer: str = setting("sgd", choices=("sgd", "adam"), help="sgd or adam")
    lr: float = setting(0.05, gt=0, help="peak learning rate")
    momentum: float = setting(0.9, ge=0, lt=1, help="SGD momentum")
    weight_decay: float = setting(5e-4, ge=0, help="L2 weight decay")
    nesterov: bool = setting(False, help="Nesterov momentum")
    schedule: str = setting("cosine", registry="lr schedule",
                            help="learning-rate schedule: constant, step, cosine or cyclic")
    step_size: int = setting(10, ge=1, help="step schedule: epochs between decays")
    gamma: float = setting(0.1, gt=0, le=1, help="step schedule: decay factor")
    seed: int = setting(0, ge=0, lt=SEED_LIMIT, help="random seed")
    augment: bool = setting(True, help="standard augmentation for the dataset")
    grad_clip: float = setting(0.0, ge=0, help="gradient-norm clip (0 = off)")
    eval_batch_size: int = setting(512, ge=1, help="batch size of clean evaluation")
    lipschitz_penalty: float = setting(0.0, ge=0, help="weight of Σ log σ_i over conv/linear operator norms (0 = off)")
    spectral_norm: float = setting(0.0, ge=0, help="cap every conv/linear operator norm at this value (0 = off)")
    loss: str | None = setting(None, registry="loss", help="training loss by name (default: [adversarial]'s "
                               "method, else natural); it takes the [adversarial] settings it declares")
    loss_options: dict[str, Any] = setting({}, help="the loss's own settings, e.g. a distillation temperature")
    qat: bool = setting(False, help="quantization-aware training: train through the int8 QDQ graph's fake "
                        "quantization (training/qat.py); combines with every loss")
    qat_freeze_step: int = setting(0, ge=0, help="QAT: global step at which the activation observers freeze "
                                   "(0: the start of the last epoch, at least half-way)")

    def validate(self) -> TrainConfig:
        """Re-check a config made in Python (not through `build`): bounds, choices and the schedule's name."""
        return build(TrainConfig, asdict(self), "[train]")


@dataclass
class AdversarialConfig:
    """[adversarial] (and [compress.adversarial]): adversarial training — Madry PGD-AT, FGSM-RS (Wong et al.),
    TRADES (Zhang et al.) — with an ε schedule and the catastrophic-overfitting guard (Marshall; Peconi)."""
    method: str = setting("pgd", choices=ADVERSARIAL_METHODS, help="pgd, fgsm-rs, trades or none")
    eps: float = setting(8 / 255, ge=0, le=1, grid=True, help="L∞ ε in [0,1] pixels (compress: a list is a grid)")
    steps: int = setting(10, ge=1, help="attack steps per batch (PGD, TRADES)")
    alpha: float | None = setting(None, gt=0, help="attack step size (default per method)")
    weight: float | None = setting(None, ge=0, help="w of w·CE(x_adv)+(1−w)·CE(x); TRADES: β")
    schedule: str = setting("constant", choices=("constant", "staged", "linear"), help="ε schedule")
    stages: int | None = setting(None, ge=1, help="staged schedule: number of stages")
    values: list[float] | None = setting(None, help="staged schedule: explicit ε per stage")
    start: float | None = setting(None, ge=0, le=1, help="linear schedule: starting ε")
    ramp: float | None = setting(None, gt=0, le=1, help="linear schedule: fraction of training to ramp over")
    min_steps: int | None = setting(None, ge=1, help="attack steps rise from this by one per epoch")
    random_init: bool = setting(True, help="random start of the attack")
    seed: int = setting(0, ge=0, lt=SEED_LIMIT, help="seed of the random starts")
    guard: bool | None = setting(None, help="catastrophic-overfitting guard (default: on for fgsm-rs)")
    guard_steps: int = setting(5, ge=1, help="guard: PGD steps")
    guard_max_drop: float = setting(0.2, ge=0, le=1, help="guard: largest allowed fall of PGD accuracy")
    guard_floor: float = setting(0.0, ge=0, le=1, help="guard: lowest allowed PGD accuracy")
    guard_batch_size: int = setting(256, ge=1, help="guard: size of its fixed training batch")

    @property
    def adversarial(self) -> bool:
        return self.method not in NATURAL_METHODS


@dataclass
class CompressEvaluateConfig:
    """[compress.evaluate]: dense vs pruned — clean accuracy, PGD-k and optionally the standard suite."""
    eps: float | None = setting(None, ge=0, le=1, help="ε of the PGD check (default: the training ε)")
    pgd_steps: int = setting(20, ge=1, help="PGD steps")
    suite: bool = setting(False, help="also the cumulative standard suite")
    n: int | None = setting(None, ge=1, help="points attacked (a fixed random subset; default all)")
    seed: int = setting(0, ge=0, lt=SEED_LIMIT, help="seed of the subset and the attacks")


@dataclass
class CompressConfig:
    """[compress]: ADMM or one-shot pruning with physical removal (Marshall; Ye et al.; Li et al. for L1)."""
    method: str = setting("admm", choices=("admm", "l1", "magnitude"),
                          help="admm | l1 (one-shot L1 filter, Li et al.) | magnitude (one-shot projection)")
    scheme: str = setting("filter", registry="pruning scheme", help="irregular, filter, column or channel")
    keep: float = setting(0.5, grid=True, help="fraction kept, in (0, 1] (a list is a grid)")
    global_keep: bool = setting(False, help="one ranking across layers")
    funnel: bool = setting(False, help="density falling with depth")
    layers: list[str] = setting([], help="fnmatch patterns of layers to prune; empty = all")
    layer_keep: dict[str, float] = setting({}, help="per-layer keep ratio overrides")
    round_to: int = setting(1, ge=1, help="kept channels per layer rounded to a multiple of this (at least it): 16 "
                                          "suits onnxruntime's x86 int8 and fp32 convolution kernels")
    threshold: float | None = setting(None, ge=0, help="l1 only: drop filters whose kernel L1 norm is below this")
    admm_epochs: int = setting(4, ge=1, help="epochs of ADMM training")
    rho: float = setting(1e-2, gt=0, help="ADMM penalty ρ at the start")
    rho_growth: float = setting(1.3, ge=1, help="ρ multiplier at each z/u update")
    dual_rescale: bool = setting(True, help="u ← u·ρ_old/ρ_new when ρ grows (Boyd et al. §3.4.1); false: the old, "
                                            "unscaled u")
    admm_interval: int = setting(1, ge=1, help="epochs between z / u updates")
    keep_schedule: str = setting("constant", choices=("constant", "linear", "staged"),
                                 help="how the keep ratio ADMM projects onto falls to `keep`")
    keep_ramp: float = setting(1.0, gt=0, le=1, help="linear: fraction of the ADMM epochs over which it falls")
    keep_stages: int = setting(3, ge=1, help="staged: number of equal stages")
    admm_lr: float | None = setting(None, gt=0, help="default: the training lr")
    retrain_epochs: int = setting(3, ge=0, help="masked retraining epochs")
    retrain_lr: float | None = setting(None, gt=0, help="default: the training lr")
    physical: bool = setting(True, help="remove pruned channels physically")

    def check(self, label: Callable[[str], str] = "[compress] {}".format) -> None:
        """Checks across fields; `label` names a key's origin in errors (a recipe key or the option given)."""
        for keep in grid_values(self.keep):
            if not 0 < keep <= 1:
                raise ConfigError(f"{label('keep')} = {keep} is outside (0, 1]; e.g. 0.5 keeps half the weights")
        if self.method == "l1" and self.scheme != "filter":
            raise ConfigError(f"L1 filter pruning prunes filters; use --scheme filter, not '{self.scheme}'")
        if self.threshold is not None and self.method != "l1":
            raise ConfigError("an L1 threshold applies to --method l1 only")
        if self.keep_schedule != "constant" and self.method != "admm":
            raise ConfigError(f"a falling keep ratio (--keep-schedule {self.keep_schedule}) needs --method admm")

    def validate(self) -> CompressConfig:
        """Re-check a config made in Python; one keep ratio (a grid is run by `compress_grid`)."""
        config = build(CompressConfig, asdict(self), "[compress]")
        if isinstance(config.keep, list):
            raise ConfigError("compress_model prunes to one keep ratio; run a list of them with compress_grid")
        return config


SUITES = ("standard", "none")


@dataclass
class EvaluateConfig:
    """[evaluate]: robustness evaluation — the cumulative standard suite (APGD-CE → APGD-T → (FAB-T) → Square,
    Croce & Hein 2020), single attacks, a robustness curve, minimal perturbations (Peck) and masking checks."""
    suite: str = setting("standard", choices=SUITES, help="standard or none")
    eps: float = setting(8 / 255, ge=0, help="perturbation budget in [0,1] pixels")
    norm: str = setting("linf", choices=("linf", "l2"), help="linf or l2")
    attacks: list[str] = setting([], help="extra single attacks")
    curve: bool = setting(False, help="robustness curve (accuracy against ε, PGD)")
    curve_grid: list[float] | None = setting(None, help="ε grid of the curve")
    curve_steps: int = setting(100, ge=1, help="PGD steps at every ε of the curve")
    n: int | None = setting(None, ge=1, help="evaluate the first n test points (default all)")
    seed: int = setting(0, ge=0, lt=SEED_LIMIT, help="random seed")
    steps: int = setting(100, ge=1, help="iterations per APGD (and FAB-T) run")
    n_restarts: int = setting(1, ge=1, help="APGD (and FAB-T) restarts")
    square_queries: int = setting(1000, ge=1, help="Square attack query budget")
    n_target_classes: int = setting(9, ge=1, help="target classes of APGD-T (and FAB-T)")
    minimal: str | None = setting("fgs-search", help="minimal-perturbation attack, or none")
    masking_checks: bool = setting(True, help="gradient-masking checks")
    masking_steps: int = setting(10, ge=1, help="PGD steps of the masking checks")
    batch_size: int = setting(256, ge=1, help="attack batch size")
    fab: bool = setting(False, help="add FAB-T to the standard suite")
    artifact: str | None = setting(None, help="an export bundle of the run: each of its artifacts (fp32, fp16, int8) "
                                              "judged by its own onnxruntime outputs instead of the PyTorch model")

    def check(self, label: Callable[[str], str] = "[evaluate] {}".format) -> None:
        if self.minimal in ("none", ""):
            self.minimal = None
        for i, eps in enumerate(self.curve_grid or []):
            _check_bounds(eps, {"ge": 0}, f"{label('curve_grid')}[{i}]")
        if self.fab and self.suite != "standard":
            raise ConfigError("fab adds FAB-T to the standard suite; drop suite = none (or use the attack fab-t)")


@dataclass
class ExportConfig:
    """[export]: ONNX at the target's opset (+ fp16, INT8 calibration), parity checks and the bundle."""
    target: str = setting("x86-cpu", help="device profile name, alias or .toml path")
    opset: int | None = setting(None, ge=7, help="ONNX opset (default: the target's maximum)")
    fp16: bool | None = setting(None, help="fp16 model (default: if the target has it)")
    int8: bool | None = setting(None, help="int8 in the target's own way, as its profile's [int8] runtime says: "
                                "onnxruntime QDQ quantized here (CPU targets) or a TensorRT engine calibrated on the "
                                "device (GPU targets) (default: if the target has it)")
    int8_method: str | None = setting(None, choices=CALIBRATION_METHODS,
                                      help="onnxruntime int8 calibration method (default: the target's)")
    int8_exclude: str = setting("none", help="operators left float32 in the onnxruntime int8 graph: none, auto "
                                       "(the convolutions onnxruntime's x86 int8 kernel runs slower than float: "
                                       "under 16 output channels, or input channels not a multiple of 4), measure "
                                       "(auto only if the whole graph then runs faster, timed at export on this "
                                       "host) or comma-separated node names")
    int8_max_drop: float = setting(0.01, ge=0, le=1, help="largest clean accuracy drop of the int8 artifact against "
                                                         "fp32 (a fraction: 0.01 = 1 point)")
    int8_min_agreement: float = setting(0.9, ge=0, le=1, help="smallest top-1 agreement of int8 with fp32")
    force_int8: bool = setting(False, help="keep an int8 artifact over the tolerance in the bundle")
    parity_points: int = setting(1000, ge=1, help="test points the int8 agreement rule is measured on")
    batch: int = setting(1, ge=1, help="batch size of the memory estimate and TensorRT engines")
    golden: int = setting(64, ge=1, help="golden test inputs")
    calibration: int = setting(256, ge=0, help="INT8 calibration inputs saved")
    tolerance: float = setting(1e-4, gt=0, help="max |logit difference| for fp32 parity")
    fp16_tolerance: float | None = setting(None, gt=0, help="max |logit difference| for fp16 parity, relative to "
                                                            "the largest |logit| (default: the precision table's)")
    engine: bool = setting(False, help="also build TensorRT engines (only on the target device)")


@dataclass
class BenchConfig:
    """[bench]: latency per runtime and batch size (p50/p90/p99, throughput, memory)."""
    target: str = setting("x86-cpu", help="device profile name, alias or .toml path")
    runtimes: list[str] | None = setting(None, help="runtimes (default: the target's available here)")
    batches: list[int] = setting([1, 8, 32], help="batch sizes")
    mode: str = setting("latency", help="timing mode")
    repeats: int = setting(50, ge=1, help="timed calls per measurement")
    warmup: int = setting(10, ge=0, help="untimed calls before timing")
    precision: str = setting("fp32", choices=PRECISION_NAMES, help="precision")  # follows the table
    precisions: list[str] | None = setting(None, help="several precisions timed side by side in one record "
                                                      "(default: [precision])")
    threads: int | None = setting(None, ge=1, help="CPU threads (default: the target's)")
    memory: bool = setting(True, help="measure peak memory in a separate pass")

    @property
    def chosen_precisions(self) -> list[str]:
        """The precisions timed, in order, each once: `precisions`, else `precision`."""
        return list(dict.fromkeys(self.precisions or [self.precision]))

    def check(self, label: Callable[[str], str] = "[bench] {}".format) -> None:
        for i, p in enumerate(self.precisions or []):
            _check_bounds(p, {"choices": PRECISION_NAMES}, f"{label('precisions')}[{i}]")
        for i, b in enumerate(self.batches):
            _check_bounds(b, {"ge": 1}, f"{label('batches')}[{i}]")
        if not self.batches:
            raise ConfigError(f"{label('batches')} is empty; give at least one batch size")


# When a device timing row counts as settled, unless the target profile's [stability] table or an option says
# otherwise (remote/options.py `Stability` reads them; devices/profile.py validates the profile's table).
STABILITY_LIMITS: dict[str, float | int] = {"max_cv": 0.10, "max_temperature_rise_c": 5.0, "remeasure": 1}


@dataclass
class DeviceConfig:
    """[device]: measuring on a device through the runner (edgerobust.remote) — how to reach it (`--host`, a fleet
    file's [[device]] fields) and what to time (bench) or replay, as Marshall measured boards."""
    host: str = setting("local", help="user@host[:port], an ~/.ssh/config alias, or local[:PYTHON]")
    python: str | None = setting(None, help="the device's Python (default: python3)")
    root: str | None = setting(None, help="work directory on the device (default: .cache/edgerobust-device under the "
                                           "login directory; local: ~/.cache/edgerobust/local-device)")
    ssh_config: str | None = setting(None, help="an ssh_config file for ssh -F (default: your own)")
    insecure_host_key: bool = setting(False, help="do not check the device's SSH host key (DANGEROUS)")
    timeout: float = setting(600.0, gt=0, help="seconds one runner command may take on the device")
    connect_timeout: float = setting(10.0, gt=0, help="seconds to wait for an SSH connection")
    max_output_mib: float = setting(64.0, gt=0, help="MiB of stdout (and of stderr) one runner command may send "
                                                     "back before it is stopped as a broken or hostile device")
    target: str | None = setting(None, help="device profile (default: the run's only export; pipeline: [export])")
    name: str | None = setting(None, help="the device's name in RUN/device/<name>/ (default: made from the host; "
                                         "the pipeline: the host as written)")
    runtime: str | None = setting(None, help="the runner's runtime (default: the target's first the device has)")
    threads: int | None = setting(None, ge=0, help="threads on the device (default: the target's; 0 = all cores)")
    precisions: list[str] | None = setting(None, help="precisions (default: the target's that the bundle has; "
                                                      "replay: every one the bundle has)")
    batches: list[int] = setting([1], help="batch sizes timed")
    repeats: int = setting(30, ge=1, help="timed calls per measurement")
    warmup: int = setting(5, ge=0, help="untimed calls before timing")
    max_cv: float | None = setting(None, gt=0, help="re-measure a row above this coefficient of variation "
                                                    f"(default: the profile's, else {STABILITY_LIMITS['max_cv']:g})")
    max_temperature_rise_c: float | None = setting(
        None, gt=0, help="re-measure a row whose temperature rises more, °C (default: the profile's, else "
                         f"{STABILITY_LIMITS['max_temperature_rise_c']:g})")
    remeasure: int | None = setting(None, ge=0, help="extra attempts for a noisy row before it is flagged "
                                                     f"(default: the profile's, else {STABILITY_LIMITS['remeasure']})")
    replay_batch: int = setting(64, ge=1, help="batch size of replay on the device")

    def check(self, label: Callable[[str], str] = "[device] {}".format) -> None:
        if not self.batches:
            raise ConfigError(f"{label('batches')} is empty; give at least one batch size")
        for i, b in enumerate(self.batches):
            _check_bounds(b, {"ge": 1}, f"{label('batches')}[{i}]")
        if self.name is not None:  # it becomes RUN/device/<name>/: the one naming rule (names.py)
            try:
                check_file_name(self.name, label("name"))
            except EdgeRobustError as exc:
                raise ConfigError(str(exc)) from None

    @property
    def stability(self) -> dict[str, float | int | None]:
        """The stability limits given here (None: the profile's, else STABILITY_LIMITS)."""
        return {k: getattr(self, k) for k in STABILITY_LIMITS}


@dataclass
class PipelineConfig:
    """[pipeline]: the steps `edgerobust pipeline` runs, in order."""
    steps: list[str] = setting([], help="step names")


# Every top-level recipe table and the dataclass that reads it; the coming sections register here too.
SECTIONS: dict[str, type] = {
    "model": ModelSection, "data": DataSection, "train": TrainConfig, "adversarial": AdversarialConfig,
    "compress": CompressConfig, "evaluate": EvaluateConfig, "export": ExportConfig, "bench": BenchConfig,
    "device": DeviceConfig, "pipeline": PipelineConfig,
}
NESTED = {"compress": {"adversarial": AdversarialConfig, "evaluate": CompressEvaluateConfig}}
RECIPE_META = {"origin"}  # keys the loader adds


def register_section(name: str, cls: type, nested: dict[str, type] | None = None) -> type:
    if name in SECTIONS:
        raise ValueError(f"recipe section [{name}] registered twice")
    SECTIONS[name] = cls
    if nested:
        NESTED[name] = nested
    return cls


def _table(recipe: Mapping[str, Any], name: str, origin: str) -> dict[str, Any]:
    value = recipe.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"recipe {origin}: [{name}] must be a table of settings, not {value!r}")
    return dict(value)


def section(recipe: Mapping[str, Any], name: str, cls: type[C] | None = None, *,
            overrides: Mapping[str, Any] | None = None) -> C:
    """Recipe section `name` (dotted for nested: "compress.adversarial") as its dataclass, with overrides."""
    origin = str(recipe.get("origin", "recipe"))
    parts = name.split(".")
    table: Mapping[str, Any] = recipe
    for part in parts:
        table = _table(table, part, origin)
    if cls is None:
        cls = NESTED[parts[0]][parts[1]] if len(parts) > 1 else SECTIONS[name]
    nested = set(NESTED.get(name, {})) if len(parts) == 1 else set()
    values = {k: v for k, v in table.items() if k not in nested}
    return build(cls, values, f"recipe {origin}: [{name}]" if origin != "recipe" else f"[{name}]",
                 overrides=overrides)


def check_recipe(recipe: Mapping[str, Any]) -> None:
    """Every section of a recipe read once: an unknown section, key, type or value fails here, before any work."""
    origin = str(recipe.get("origin", "recipe"))
    unknown = sorted(set(recipe) - set(SECTIONS) - RECIPE_META)
    if unknown:
        raise ConfigError(f"recipe {origin}: unknown section(s) {', '.join(f'[{u}]' for u in unknown)}; valid "
                          f"sections: {', '.join(f'[{s}]' for s in sorted(SECTIONS))}")
    for name in SECTIONS:
        if name in recipe:
            section(recipe, name)
            for sub in NESTED.get(name, {}):
                if sub in _table(recipe, name, origin):
                    section(recipe, f"{name}.{sub}")


def is_adversarial(settings: AdversarialConfig | Mapping[str, Any] | None) -> bool:
    """Whether adversarial settings ask for adversarial training (an [adversarial] table's method defaults to pgd)."""
    if settings is None:
        return False
    if isinstance(settings, AdversarialConfig):
        return settings.adversarial
    return bool(settings) and str(settings.get("method", "pgd")) not in NATURAL_METHODS



# ------------------------------------------------------------------------------- sections of later features
# [smooth] (edgerobust.smoothing, Cohen et al. 2019; Song's thesis): here, so every recipe reader knows the section
# whatever it imported; the defaults are Cohen et al.'s (n0 = 100, n = 100,000, α = 0.001).
SMOOTH_RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]


@dataclass
class SmoothConfig:
    """[smooth]: PREDICT/CERTIFY of the Gaussian-smoothed classifier on the first points of the test split."""
    sigma: float = setting(0.25, gt=0, grid=True, help="noise standard deviation σ in [0,1] pixels (a list: several)")
    alpha: float = setting(0.001, gt=0, lt=1, help="failure probability α of each certificate")
    n0: int = setting(100, ge=1, help="selection samples per point")
    n: int = setting(100_000, ge=1, help="estimation samples per point")
    batch: int = setting(1000, ge=1, help="noisy samples per forward pass")
    seed: int = setting(0, ge=0, lt=2**63, help="noise seed (streams keyed by seed, point and phase)")
    points: int = setting(100, ge=1, help="test points to certify")
    start: int = setting(0, ge=0, help="first test point (shards: --start/--count)")
    count: int | None = setting(None, ge=1, help="points of this shard (default: to the end of --points)")
    runtime: str = setting("torch-cpu", help="torch-cpu, torch-cuda, ort-cpu, ort-cuda, ...")
    precision: str = setting("fp32", choices=("fp32", "fp16", "int8"), help="the artifact's precision")
    threads: int = setting(0, ge=0, help="CPU threads of the runtime (0 = its default)")
    radii: list[float] = setting(list(SMOOTH_RADII), help="L2 radii of the certified-accuracy table")
    predict: bool = setting(False, help="also run PREDICT (its own noise stream)")
    noise: str = setting("gaussian", choices=("gaussian", "sound"), help="gaussian (float32, assumes exact "
                         "arithmetic) or sound (Voráček & Hein: rounded Gaussian on the 1/255 grid)")

    def check(self, label: Callable[[str], str] = "[smooth] {}".format) -> None:
        if not self.radii:
            raise ConfigError(f"{label('radii')} is empty; give at least one radius")
        for i, r in enumerate(self.radii):
            if r < 0:
                raise ConfigError(f"{label('radii')}[{i}] = {r!r} must be at least 0")
        if self.start >= self.points:
            raise ConfigError(f"{label('start')} = {self.start} must be below points = {self.points}")



register_section("smooth", SmoothConfig)
