"""Compress a trained run: the library call behind `edgerobust compress` and the pipeline's compress step.

Stages, each a run directory under `out` with its own checkpoint so a killed compression resumes:
  admm/     ADMM training from the source weights (method "admm"), with the adversarial loss if any;
  retrain/  hard pruning then masked retraining (pruned weights, gradients and optimiser state stay zero);
  out/      the slim network (dead channels physically removed), its manifest and the compression section.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..compute_device import describe_device, resolve_device, to_model
from ..data import load_dataset
from ..errors import EdgeRobustError
from ..models import MODELS, count_flops, count_parameters
from ..recipe import section
from ..run import RunDir
from ..training import TrainConfig, distributed, evaluate_clean
from ..training.api import ADVERSARIAL_KEYS, TRAIN_KEYS, adversarial_training, is_adversarial, train_model
from .admm import ADMMCallback, keep_schedule
from .l1_filter import l1_filter_masks
from .masks import MaskCallback, apply_masks, density
from .physical import remove_dead_channels
from .schemes import SCHEMES, STRUCTURED, build_plan, check_keep
from .stats import compression_stats
from .tradeoff import evaluate_point

METHODS = ("admm", "l1", "magnitude")
OUTPUT_TOLERANCE = 1e-4  # slim vs masked logits: float reordering only


@dataclass
class CompressConfig:
    method: str = "admm"  # admm | l1 (one-shot L1 filter, Li et al.) | magnitude (one-shot projection)
    scheme: str = "filter"
    keep: float = 0.5
    global_keep: bool = False
    funnel: bool = False
    layers: list[str] = field(default_factory=list)  # fnmatch patterns of layers to prune; empty = all
    layer_keep: dict[str, float] = field(default_factory=dict)  # per-layer keep ratio overrides
    threshold: float | None = None  # l1 only: drop filters whose kernel L1 norm is below this
    admm_epochs: int = 4
    rho: float = 1e-2
    rho_growth: float = 1.3
    admm_interval: int = 1  # epochs between z / u updates
    keep_schedule: str = "constant"  # constant | linear | staged: the keep ratio ADMM projects onto falls to `keep`
    keep_ramp: float = 1.0  # linear: fraction of the ADMM epochs over which it falls
    keep_stages: int = 3  # staged: number of equal stages
    admm_lr: float | None = None  # default: the training lr
    retrain_epochs: int = 3
    retrain_lr: float | None = None  # default: the training lr
    physical: bool = True

    def validate(self) -> CompressConfig:
        if self.method not in METHODS:
            raise EdgeRobustError(f"unknown compression method '{self.method}'; valid methods: {', '.join(METHODS)}")
        SCHEMES.get(self.scheme)
        if self.threshold is None or self.method != "l1":
            check_keep(self.keep)
        if self.method == "l1" and self.scheme != "filter":
            raise EdgeRobustError(f"L1 filter pruning prunes filters; use --scheme filter, not '{self.scheme}'")
        if self.threshold is not None and self.method != "l1":
            raise EdgeRobustError("an L1 threshold applies to --method l1 only")
        if self.method == "admm" and self.admm_epochs < 1:
            raise EdgeRobustError(f"ADMM needs at least one epoch, got {self.admm_epochs}")
        if self.keep_schedule != "constant" and self.method != "admm":
            raise EdgeRobustError(f"a falling keep ratio (--keep-schedule {self.keep_schedule}) needs --method admm")
        keep_schedule(self.keep_schedule, max(self.admm_epochs, 1), ramp=self.keep_ramp, stages=self.keep_stages)
        if self.retrain_epochs < 0:
            raise EdgeRobustError(f"retrain epochs must be non-negative, got {self.retrain_epochs}")
        return self


COMPRESS_KEYS = {f.name for f in fields(CompressConfig)}
EVAL_KEYS = {"eps", "pgd_steps", "suite", "n", "seed"}


def build_loss(adv: dict[str, Any] | None, epochs: int):
    """The stage's adversarial loss from [adversarial]-style settings (None: natural training)."""
    return adversarial_training(adv, epochs)[0] if adv else None


def _stage(out: Path, source: RunDir, config: TrainConfig, data: dict[str, Any], *, adv, callbacks, resume: bool,
           progress, recipe, description: str, device: torch.device | None = None) -> RunDir:
    """One training stage as its own run directory; a finished stage is reused on --resume."""
    if resume and (out / "model.json").is_file() and (out / "model.pt").is_file():
        return RunDir.open(out)
    return train_model(out, source.manifest["model"]["spec"], data["name"], config, data_root=data.get("root"),
                       data_options=data.get("options"), resume=resume and (out / "checkpoint.pt").is_file(),
                       adversarial=adv or None, callbacks=callbacks, recipe=recipe, progress=progress, init_from=source,
                       description=description, device=device)


def pretrain(spec: str, out: Path, config: TrainConfig, data: str, data_root: str | Path | None, *,
             adv: dict[str, Any] | None, resume: bool, progress, recipe, device: str | torch.device | None = None
             ) -> RunDir:
    """Train `spec` from scratch (adversarially when `adv` says so) as the dense source; reused on --resume."""
    if resume and (out / "model.json").is_file() and (out / "model.pt").is_file():
        return RunDir.open(out)
    return train_model(out, spec, data, config, data_root=data_root, adversarial=adv or None,
                       resume=resume and (out / "checkpoint.pt").is_file(), recipe=recipe, progress=progress,
                       description="pretrain", device=device)


def _source_data(source: RunDir, data: str | None, data_root: str | Path | None) -> dict[str, Any]:
    train = source.manifest.get("dataset", {}).get("train", {})
    name = data or train.get("name")
    if not name:
        raise EdgeRobustError(f"{source.path} does not record its dataset; pass --data")
    root = data_root if data_root is not None else (source.manifest.get("dataset", {}).get("root") or None)
    return {"name": name, "root": root}


def compress_model(source: str | Path | RunDir, out: str | Path, config: CompressConfig | None = None,
                   train_config: TrainConfig | None = None, *, adv: dict[str, Any] | None = None,
                   evaluate: dict[str, Any] | None = None, data: str | None = None,
                   data_root: str | Path | None = None, resume: bool = False, progress: bool | None = None,
                   recipe: dict | None = None, device: str | torch.device | None = None) -> RunDir:
    """Compress the model of run `source` into run directory `out` (see the module docstring for the stages).

    `device` (auto when None; under torchrun each rank's own) runs the training stages, the projections, the
    physical removal and the evaluation; the runs' weights are written as CPU tensors."""
    config = (config or CompressConfig()).validate()
    base = (train_config or TrainConfig()).validate()
    out = Path(out)
    ctx = distributed.init_from_env()
    device = ctx.device if ctx is not None else resolve_device(device)
    if not isinstance(source, RunDir) and not Path(source).is_dir() and str(source).partition(":")[0] in MODELS:
        source = pretrain(str(source), out / "pretrain", base, data or "digits", data_root, adv=adv,
                          resume=resume, progress=progress, recipe=recipe, device=device)
    source = source if isinstance(source, RunDir) else RunDir.open(source)
    if not resume and any((out / p).exists() for p in ("admm/checkpoint.pt", "retrain/checkpoint.pt", "model.pt")):
        raise EdgeRobustError(f"{out} already holds a compression; pass --resume to continue it or choose another "
                              "--out")
    if out.resolve() == source.path.resolve():
        raise EdgeRobustError("--out must differ from the source run directory")
    data_info = _source_data(source, data, data_root)
    shape = source.input_shape
    dense = source.load_model().to(device)
    # Build the plan before any training so a bad scheme / layer / keep fails at once.
    plan = build_plan(dense, shape, config.scheme, config.keep if config.threshold is None else 1.0,
                      global_keep=config.global_keep, funnel=config.funnel, layers=config.layers or None,
                      layer_keep=config.layer_keep)
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    admm_info: dict[str, Any] = {}
    pruned_from = source
    if config.method == "admm":
        admm_config = replace(base, epochs=config.admm_epochs, lr=config.admm_lr or base.lr)
        admm = ADMMCallback(plan, config.rho, config.rho_growth, config.admm_interval,
                            keep_schedule(config.keep_schedule, config.admm_epochs, ramp=config.keep_ramp,
                                          stages=config.keep_stages))
        pruned_from = _stage(out / "admm", source, admm_config, data_info, adv=adv,
                             callbacks=[admm], resume=resume, progress=progress, recipe=recipe,
                             description="admm", device=device)
        admm_info = {"rho": config.rho, "rho_growth": config.rho_growth, "interval": config.admm_interval,
                     "epochs": config.admm_epochs, "keep_schedule": config.keep_schedule}
        history += [{**h, "stage": "admm"} for h in pruned_from.manifest["training"]["history"]]
    model = pruned_from.load_model().to(device)
    if config.method == "l1":
        plan, masks = l1_filter_masks(model, shape, None if config.threshold is not None else config.keep,
                                      config.threshold, config.layers or None)
    else:
        plan = build_plan(model, shape, config.scheme, config.keep, global_keep=config.global_keep,
                          funnel=config.funnel, layers=config.layers or None, layer_keep=config.layer_keep)
        masks = plan.masks({n: p.detach() for n, p in model.named_parameters()})
    if config.retrain_epochs > 0:
        retrain_config = replace(base, epochs=config.retrain_epochs, lr=config.retrain_lr or base.lr)
        retrain = _stage(out / "retrain", pruned_from, retrain_config, data_info,
                         adv=adv, callbacks=[MaskCallback(masks)],
                         resume=resume, progress=progress, recipe=recipe, description="masked retrain",
                         device=device)
        masked = retrain.load_model().to(device)
        history += [{**h, "stage": "retrain"} for h in retrain.manifest["training"]["history"]]
    else:
        masked = apply_masks(model, masks)
    masked.eval()
    if ctx is not None and not ctx.is_main:  # rank 0 alone removes, evaluates and writes the slim run
        return distributed.finished_run(out, ctx)
    test = load_dataset(data_info["name"], "test", data_info.get("root"))
    removed: dict[str, int] = {}
    slim, max_diff = masked, 0.0
    if config.physical:
        slim, removed = remove_dead_channels(masked, shape)
        with torch.no_grad():
            probe = to_model(masked, test.images[:256])
            max_diff = float((slim(probe) - masked(probe)).abs().max()) if removed else 0.0
        if max_diff > OUTPUT_TOLERANCE:
            raise RuntimeError(f"physical removal changed the outputs by {max_diff:.3g}; this is a bug")
    stats = compression_stats(dense, masked, slim, shape)
    evaluation = None
    if evaluate:
        settings = {k: v for k, v in evaluate.items() if k in EVAL_KEYS}
        settings.setdefault("eps", (adv or {}).get("eps", 8 / 255))
        dense_row = {"label": "dense (source)", "keep": 1.0, "params": stats["totals"]["params_before"],
                     **evaluate_point(dense, test, progress=progress, **settings)}
        kept = stats["totals"]["nonzero_after"] / max(stats["totals"]["params_before"], 1)
        pruned_row = {"label": f"{config.method} {config.scheme}", "keep": config.keep if config.threshold is None
                      else kept, "params": stats["totals"]["params_after"],
                      **evaluate_point(slim, test, progress=progress, **settings)}
        evaluation = {"settings": settings, "rows": [dense_row, pruned_row]}
    loss = build_loss(adv, 1)
    run = RunDir.create(out)
    run.add_parent(source, "compressed from")
    info = dict(source.manifest["model"])
    info["physically_pruned"] = bool(removed) or bool(info.get("physically_pruned"))
    clean = evaluate_clean(slim, test)
    source_metrics = source.manifest.get("metrics", {})
    run.save_model(
        slim, info,
        dataset=source.manifest.get("dataset", {}),
        training={"config": asdict(base), "history": history, "stopped_early": None,
                  "loss": loss.describe() if loss is not None else {"name": "natural"}},
        recipe=recipe or {},
        seed=base.seed,
        compression={"config": asdict(config), "plan": plan.describe(), "admm": admm_info, "adversarial": adv or {},
                     "mask_density": density(masks), "removed_channels": removed,
                     "max_output_difference": max_diff, "stats": stats, "evaluation": evaluation,
                     "source_test_accuracy": source_metrics.get("test_accuracy"),
                     "seconds": round(time.perf_counter() - started, 2),
                     "structured": config.scheme in STRUCTURED, "device": describe_device(device)},
        metrics={"test_accuracy": clean["accuracy"], "parameters": count_parameters(slim),
                 "flops": count_flops(slim, shape)},
    )
    distributed.barrier(ctx)
    return run


def configs_from_recipe(recipe: dict[str, Any], overrides: dict[str, Any] | None = None
                        ) -> tuple[CompressConfig, TrainConfig, dict[str, Any], dict[str, Any]]:
    """Compression, training, adversarial and evaluation settings from [compress], [train], [adv], [evaluate]."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values = section(recipe, "compress", COMPRESS_KEYS | {"adversarial", "evaluate"})
    nested = {**values, "origin": recipe.get("origin")}
    adv = section(nested, "adversarial", ADVERSARIAL_KEYS)
    evaluate = section(nested, "evaluate", EVAL_KEYS)
    values.pop("adversarial", None), values.pop("evaluate", None)
    values.update({k: v for k, v in overrides.items() if k in COMPRESS_KEYS})
    if isinstance(values.get("keep"), list):  # a grid of keep ratios (compress_grid runs each); check them all
        for keep in values["keep"]:
            check_keep(keep)
        values["keep"] = values["keep"][0] if values["keep"] else 0.5
    train = section(recipe, "train", TRAIN_KEYS)
    train.update({k: v for k, v in overrides.items() if k in TRAIN_KEYS})
    adv.update({k[4:]: v for k, v in overrides.items() if k.startswith("adv_")})
    try:
        return CompressConfig(**values).validate(), TrainConfig(**train).validate(), adv, evaluate
    except TypeError as exc:
        raise EdgeRobustError(f"bad [compress] / [train] settings: {exc}") from None


def compress_grid(source: str | Path | RunDir, out: str | Path, keeps: list[float], eps_values: list[float | None],
                  config: CompressConfig, train_config: TrainConfig, *, adv: dict[str, Any] | None = None,
                  evaluate: dict[str, Any] | None = None, data: str | None = None,
                  data_root: str | Path | None = None, resume: bool = False, progress: bool | None = None,
                  recipe: dict | None = None, device: str | torch.device | None = None
                  ) -> tuple[list[RunDir], list[dict[str, Any]]]:
    """Every (training ε, keep ratio) pair, as Marshall's grid: one dense source per ε, one run per keep ratio.

    Returns the runs and the trade-off rows (dense then each keep ratio, per ε), also written to tradeoff.json.
    """
    from ..io import write_json

    out = Path(out)
    for keep in keeps:
        check_keep(keep)
    runs, rows = [], []
    for eps in eps_values:
        adv_eps = {**(adv or {}), "eps": eps} if eps is not None else adv
        eps_dir = out / f"eps-{eps:g}" if len(eps_values) > 1 and eps is not None else out
        dense = source
        if not isinstance(source, RunDir) and not Path(source).is_dir() and str(source).partition(":")[0] in MODELS:
            dense = pretrain(str(source), eps_dir / "pretrain", train_config.validate(), data or "digits", data_root,
                             adv=adv_eps, resume=resume, progress=progress, recipe=recipe, device=device)
        for i, keep in enumerate(keeps):
            keep_dir = eps_dir / f"keep-{round(100 * keep)}" if len(keeps) > 1 else eps_dir
            run = compress_model(dense, keep_dir, replace(config, keep=keep),
                                 train_config, adv=adv_eps, evaluate=evaluate, data=data, data_root=data_root,
                                 resume=resume, progress=progress, recipe=recipe, device=device)
            runs.append(run)
            evaluation = run.manifest["compression"].get("evaluation")
            if evaluation:
                natural = eps is None or not is_adversarial(adv_eps)
                label = "natural" if natural else f"train ε={eps:g}"
                eval_rows = evaluation["rows"] if i == 0 else evaluation["rows"][1:]
                rows += [{**r, "label": f"{label}: {r['label']}"} for r in eval_rows]
    if rows and distributed.is_main_process():
        write_json(out / "tradeoff.json", {"rows": rows, "note": "accuracies on the test split; PGD and suite on "
                                           "a fixed subset; suite columns are cumulative (upper bounds)"})
    return runs, rows
