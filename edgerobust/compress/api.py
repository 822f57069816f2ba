"""Compress a trained run: the library call behind `edgerobust compress` and the pipeline's compress step.

Stages, each a run directory under `out` with its own checkpoint so a killed compression resumes:
  admm/     ADMM training from the source weights (method "admm"), with the adversarial loss if any;
  retrain/  hard pruning then masked retraining (pruned weights, gradients and optimiser state stay zero);
  out/      the slim network (dead channels physically removed), its manifest and the compression section.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..claim import locked
from ..compute_device import describe_device, resolve_device, to_model
from ..config import (
    AdversarialConfig,
    CompressConfig,
    CompressEvaluateConfig,
    TrainConfig,
    build,
    grid_values,
    is_adversarial,
    keys,
    section,
)
from ..data import load_dataset
from ..errors import EdgeRobustError
from ..evaluation.point import evaluate_point
from ..models import MODELS, count_flops, count_parameters, is_user_model
from ..run import RunDir
from ..training import distributed, evaluate_clean
from ..training.api import (
    TrainSetup,
    adversarial_config,
    adversarial_from_recipe,
    config_from_recipe,
    train_model,
    training_loss,
)
from .admm import ADMMCallback, keep_schedule
from .l1_filter import l1_filter_masks
from .masks import MaskCallback, apply_masks, density
from .physical import remove_and_check
from .schemes import SCHEMES, STRUCTURED, build_plan
from .stats import compression_stats

OUTPUT_TOLERANCE = 1e-4  # slim vs masked logits: float reordering only


@dataclass
class CompressSetup:
    """How a compression runs beyond its [compress] and [train] configs, passed whole to `compress_model`."""
    adversarial: AdversarialConfig | dict | None = None  # [compress.adversarial]: the stages' loss (eps may be a grid)
    evaluate: CompressEvaluateConfig | dict | None = None  # [compress.evaluate]: dense vs pruned (None: not measured)
    data: str | None = None  # default: the source run's dataset (a spec source: digits)
    data_root: str | Path | None = None  # directory holding on-disk datasets
    data_options: dict | None = None  # a spec source's dataset options ([data] options; a run keeps its own)
    model_options: dict | None = None  # a spec source's factory kwargs and mean/std ([model]; a run records its own)
    resume: bool = False  # continue a killed compression, reusing finished stages
    recipe: dict | None = None  # recorded in the manifests
    device: str | torch.device | None = None  # auto (None), cpu, cuda or cuda:N


def describe_loss(config: TrainConfig, adv: AdversarialConfig | None, stages: list[RunDir]) -> dict[str, Any]:
    """The stages' loss as the last training stage recorded it; without one, as [train] loss (a smoothing loss,
    say) or [adversarial] would build it."""
    if stages:
        return stages[-1].manifest["training"]["loss"]
    loss = training_loss(replace(config, epochs=1), adv)[0]
    return loss.describe() if loss is not None else {"name": "natural"}


def check_config(config: CompressConfig) -> CompressConfig:
    """The config layer's checks plus those of names this package owns (scheme, keep schedule)."""
    config = config.validate()  # the scheme's name too (config.check_name against SCHEMES)
    keep_schedule(config.keep_schedule, max(config.admm_epochs, 1), ramp=config.keep_ramp, stages=config.keep_stages)
    return config
def _stage(out: Path, source: RunDir, config: TrainConfig, data: dict[str, Any], *, adv, callbacks, resume: bool,
           progress, recipe, description: str, device: torch.device | None = None) -> RunDir:
    """One training stage as its own run directory; a finished stage is reused on --resume."""
    if resume and (out / "model.json").is_file() and (out / "model.pt").is_file():
        return RunDir.open(out)
    return train_model(out, source.manifest["model"]["spec"], data["name"], config,
                       TrainSetup(data_root=data.get("root"), data_options=data.get("options"),
                                  resume=resume and (out / "checkpoint.pt").is_file(), adversarial=adv or None,
                                  callbacks=callbacks, recipe=recipe, init_from=source, description=description,
                                  device=device), progress=progress)


def pretrain(spec: str, out: Path, config: TrainConfig, setup: CompressSetup, *, progress: bool | None = None
             ) -> RunDir:
    """Train `spec` from scratch (adversarially when `setup.adversarial` says so) as the dense source; reused on
    --resume."""
    if setup.resume and (out / "model.json").is_file() and (out / "model.pt").is_file():
        return RunDir.open(out)
    return train_model(out, spec, setup.data or "digits", config,
                       TrainSetup(data_root=setup.data_root, data_options=setup.data_options,
                                  model_options=setup.model_options, adversarial=setup.adversarial or None,
                                  resume=setup.resume and (out / "checkpoint.pt").is_file(), recipe=setup.recipe,
                                  description="pretrain", device=setup.device), progress=progress)


def is_model_spec(source: str | Path | RunDir) -> bool:
    """`source` names a model to pretrain (a zoo spec, an import path or an entry point), not a run directory."""
    if isinstance(source, RunDir) or Path(source).is_dir():
        return False
    return str(source).partition(":")[0] in MODELS or is_user_model(str(source))


def _source_data(source: RunDir, data: str | None, data_root: str | Path | None) -> dict[str, Any]:
    name = data or source.dataset_name
    if not name:
        raise EdgeRobustError(f"{source.path} does not record its dataset; pass --data")
    root = data_root if data_root is not None else source.data_root
    options = source.data_options if name == source.dataset_name else {}  # another dataset: its own defaults
    return {"name": name, "root": root, "options": options}


def compress_model(source: str | Path | RunDir, out: str | Path, config: CompressConfig | None = None,
                   train_config: TrainConfig | None = None, setup: CompressSetup | None = None, *,
                   progress: bool | None = None) -> RunDir:
    """Compress the model of run `source` into run directory `out` (see the module docstring for the stages).

    `setup.device` (auto when None; under torchrun each rank's own) runs the training stages, the projections, the
    physical removal and the evaluation; the runs' weights are written as CPU tensors."""
    config = check_config(config or CompressConfig())
    base = (train_config or TrainConfig()).validate()
    setup = setup or CompressSetup()
    adv = adversarial_config(setup.adversarial)
    evaluate = setup.evaluate
    if isinstance(evaluate, dict):
        evaluate = build(CompressEvaluateConfig, evaluate, "[compress.evaluate]")
    out = Path(out)
    ctx = distributed.init_from_env()
    device = ctx.device if ctx is not None else resolve_device(setup.device)
    with locked(out):  # one command writes a run directory at a time (rank 0 alone under torchrun)
        return _compress(source, out, config, base, adv=adv, evaluate=evaluate, setup=replace(setup, device=device),
                         progress=progress, ctx=ctx)


def _compress(source, out: Path, config: CompressConfig, base: TrainConfig, *, adv, evaluate, setup: CompressSetup,
              progress, ctx) -> RunDir:
    data, data_root, resume, recipe, device = setup.data, setup.data_root, setup.resume, setup.recipe, setup.device
    if base.qat and config.retrain_epochs == 0:
        raise EdgeRobustError("--qat trains the pruned model's masked retraining through int8 fake quantization "
                              "and [compress] retrain_epochs is 0; set --retrain-epochs N (N > 0) or drop --qat")
    if is_model_spec(source):  # the dense model pretrains in float; QAT is the masked retraining's
        source = pretrain(str(source), out / "pretrain", replace(base, qat=False), replace(setup, adversarial=adv),
                          progress=progress)
    source = source if isinstance(source, RunDir) else RunDir.open(source)
    if source.is_onnx:
        raise EdgeRobustError(f"{source.path}'s model is an imported ONNX file: pruning retrains PyTorch weights, "
                              "which it has none of; export, bench and query-only evaluation take it")
    if not resume and any((out / p).exists() for p in ("admm/checkpoint.pt", "retrain/checkpoint.pt", "model.pt")):
        raise EdgeRobustError(f"{out} already holds a compression; pass --resume to continue it or choose another "
                              "--out")
    if out.resolve() == source.path.resolve():
        raise EdgeRobustError("--out must differ from the source run directory")
    data_info = _source_data(source, data, data_root)
    shape = source.input_shape
    data_shape = load_dataset(data_info["name"], "test", data_info.get("root"), **data_info["options"]).input_shape
    if tuple(data_shape) != tuple(shape):
        raise EdgeRobustError(f"dataset {data_info['name']} has inputs of shape {tuple(data_shape)} but the model of "
                              f"{source.path} takes {tuple(shape)}; compress with the dataset it was trained on")
    dense = source.load_model().to(device)
    # Build the plan before any training so a bad scheme / layer / keep fails at once.
    plan = build_plan(dense, shape, config.scheme, config.keep if config.threshold is None else 1.0,
                      global_keep=config.global_keep, funnel=config.funnel, layers=config.layers or None,
                      layer_keep=config.layer_keep, round_to=config.round_to)
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    admm_info: dict[str, Any] = {}
    pruned_from = source
    stages: list[RunDir] = []  # the training stages run, in order
    if config.method == "admm":
        admm_config = replace(base, epochs=config.admm_epochs, lr=config.admm_lr or base.lr,
                              qat=False)  # QAT: in masked retraining, on the weights that ship
        admm = ADMMCallback(plan, config.rho, config.rho_growth, config.admm_interval,
                            keep_schedule(config.keep_schedule, config.admm_epochs, ramp=config.keep_ramp,
                                          stages=config.keep_stages), dual_rescale=config.dual_rescale)
        pruned_from = _stage(out / "admm", source, admm_config, data_info, adv=adv,
                             callbacks=[admm], resume=resume, progress=progress, recipe=recipe,
                             description="admm", device=device)
        admm_info = {"rho": config.rho, "rho_growth": config.rho_growth, "dual_rescale": config.dual_rescale,
                     "interval": config.admm_interval,
                     "epochs": config.admm_epochs, "keep_schedule": config.keep_schedule}
        history += [{**h, "stage": "admm"} for h in pruned_from.manifest["training"]["history"]]
        stages.append(pruned_from)
    model = pruned_from.load_model().to(device)
    if config.method == "l1":
        plan, masks = l1_filter_masks(model, shape, None if config.threshold is not None else config.keep,
                                      config.threshold, config.layers or None, config.round_to, config.layer_keep)
    else:
        plan = build_plan(model, shape, config.scheme, config.keep, global_keep=config.global_keep,
                          funnel=config.funnel, layers=config.layers or None, layer_keep=config.layer_keep,
                          round_to=config.round_to)
        masks = plan.masks({n: p.detach() for n, p in model.named_parameters()})
    if config.retrain_epochs > 0:
        retrain_config = replace(base, epochs=config.retrain_epochs, lr=config.retrain_lr or base.lr)
        retrain = _stage(out / "retrain", pruned_from, retrain_config, data_info,
                         adv=adv, callbacks=[MaskCallback(masks)],
                         resume=resume, progress=progress, recipe=recipe, description="masked retrain",
                         device=device)
        masked = retrain.load_model().to(device)
        history += [{**h, "stage": "retrain"} for h in retrain.manifest["training"]["history"]]
        stages.append(retrain)
    else:
        masked = apply_masks(model, masks)
    masked.eval()
    if ctx is not None and not ctx.is_main:  # rank 0 alone removes, evaluates and writes the slim run
        return distributed.finished_run(out, ctx)
    test = load_dataset(data_info["name"], "test", data_info.get("root"), **data_info["options"])
    info = dict(source.manifest["model"])
    removed: dict[str, int] = {}
    slim, max_diff, physical = masked, 0.0, None
    if config.physical:  # a user's model (source recorded): what torch-pruning cannot remove is reported
        slim, removed, max_diff, physical = remove_and_check(masked, shape, to_model(masked, test.images[:256]),
                                                             OUTPUT_TOLERANCE, strict="source" not in info)
    stats = compression_stats(dense, masked, slim, shape)
    evaluation = None
    if evaluate:
        settings = asdict(evaluate)
        if settings["eps"] is None:  # the training ε, else the [evaluate] default
            settings["eps"] = adv.eps if is_adversarial(adv) else 8 / 255
        dense_row = {"label": "dense (source)", "keep": 1.0, "params": stats["totals"]["params_before"],
                     **evaluate_point(dense, test, progress=progress, **settings)}
        kept = stats["totals"]["nonzero_after"] / max(stats["totals"]["params_before"], 1)
        pruned_row = {"label": f"{config.method} {config.scheme}", "keep": config.keep if config.threshold is None
                      else kept, "params": stats["totals"]["params_after"],
                      **evaluate_point(slim, test, progress=progress, **settings)}
        evaluation = {"settings": settings, "rows": [dense_row, pruned_row]}
    run = RunDir.create(out)
    run.add_parent(source, "compressed from")
    info["physically_pruned"] = bool(removed) or bool(info.get("physically_pruned"))
    clean = evaluate_clean(slim, test)
    source_metrics = source.manifest.get("metrics", {})
    run.save_model(
        slim, info,
        dataset=source.manifest.get("dataset", {}),
        training={"config": asdict(base), "history": history, "stopped_early": None,
                  "loss": describe_loss(base, adv, stages),
                  "qat": stages[-1].manifest["training"].get("qat") if base.qat and stages else None},
        recipe=recipe or {},
        seed=base.seed,
        compression={"config": asdict(config), "plan": plan.describe(), "admm": admm_info,
                     "adversarial": asdict(adv) if adv else {},
                     "mask_density": density(masks), "removed_channels": removed, "physical": physical,
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
                        ) -> tuple[CompressConfig, TrainConfig, AdversarialConfig | None,
                                   CompressEvaluateConfig | None]:
    """[compress], [train], [compress.adversarial] and [compress.evaluate] with command-line overrides: keys of
    CompressConfig or TrainConfig by name, adversarial ones prefixed `adv_` (None values are not given). `keep` and
    the adversarial `eps` may be grids (lists)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config = section(recipe, "compress", overrides={k: v for k, v in overrides.items() if k in keys(CompressConfig)})
    train = config_from_recipe(recipe, {k: v for k, v in overrides.items() if k in keys(TrainConfig)})
    adv = adversarial_from_recipe(recipe, {k[4:]: v for k, v in overrides.items() if k.startswith("adv_")},
                                  name="compress.adversarial")
    has_eval = isinstance(recipe.get("compress"), dict) and "evaluate" in recipe["compress"]
    evaluate = section(recipe, "compress.evaluate") if has_eval else None
    SCHEMES.get(config.scheme)
    return config, train, adv, evaluate


def compress_grid(source: str | Path | RunDir, out: str | Path, config: CompressConfig, train_config: TrainConfig,
                  setup: CompressSetup | None = None, *, progress: bool | None = None
                  ) -> tuple[list[RunDir], list[dict[str, Any]]]:
    """Every (training ε, keep ratio) pair, as Marshall's grid: one dense source per ε, one run per keep ratio.

    The grid is `config.keep` and `setup.adversarial.eps`, each one value or a list. Returns the runs and the
    trade-off rows (dense then each keep ratio, per ε), also written to tradeoff.json.
    """
    from ..io import write_json

    out = Path(out)
    setup = setup or CompressSetup()
    adv = adversarial_config(setup.adversarial)
    keeps = grid_values(config.keep)
    eps_values = grid_values(adv.eps) if adv is not None else [None]
    for keep in keeps:
        check_config(replace(config, keep=keep))
    runs, rows = [], []
    for eps in eps_values:
        adv_eps = replace(adv, eps=eps) if eps is not None and adv is not None else adv
        eps_dir = out / f"eps-{eps:g}" if len(eps_values) > 1 and eps is not None else out
        dense = source
        if is_model_spec(source):
            dense = pretrain(str(source), eps_dir / "pretrain", train_config.validate(),
                             replace(setup, adversarial=adv_eps), progress=progress)
        for i, keep in enumerate(keeps):
            keep_dir = eps_dir / f"keep-{round(100 * keep)}" if len(keeps) > 1 else eps_dir
            run = compress_model(dense, keep_dir, replace(config, keep=keep), train_config,
                                 replace(setup, adversarial=adv_eps), progress=progress)
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
