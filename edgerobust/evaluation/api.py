"""`evaluate_run`: the library call behind `edgerobust evaluate` and the pipeline's evaluate step."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from ..attacks import get_attack
from ..claim import locked
from ..compute_device import describe_device, resolve_device
from ..config import EvaluateConfig, validated
from ..data import load_dataset
from ..errors import EdgeRobustError
from ..run import RunDir, now
from . import masking, records
from .curve import robustness_curve
from .ensemble import SoftmaxEnsemble
from .minimal import minimal_perturbations
from .suite import UPPER_BOUND_NOTE, robust_accuracy, standard_suite
from .transfer import transfer_matrix

ROBUSTNESS_FILE = records.ROBUSTNESS_FILE


def test_data(run: RunDir, n: int | None = None):
    """The first n points of the test split of the dataset the run was trained on."""
    name = run.dataset_name
    if not name:
        raise EdgeRobustError(f"{run.path} does not record its dataset; it was not made by `edgerobust train`")
    test = load_dataset(name, "test", run.data_root, **run.data_options)
    if tuple(test.input_shape) != tuple(run.input_shape):  # a size-agnostic net would run on it without a word
        raise EdgeRobustError(f"dataset {name} now gives inputs of shape {tuple(test.input_shape)} but {run.path}'s "
                              f"model takes {tuple(run.input_shape)}; restore the data it was trained on")
    if n is not None:
        if n < 1:
            raise EdgeRobustError(f"--n must be at least 1, got {n}")
        test = test.subset(n)
    return test


def evaluate_run(run: RunDir, config: EvaluateConfig | None = None, *, transfer: Sequence[RunDir] = (),
                 ensemble: Sequence[RunDir] = (), progress: bool | None = None,
                 device: str | torch.device | None = None) -> dict[str, Any]:
    """Evaluate a run's model; write RUN/robustness.json and the manifest's "robustness" section.

    `config` is the [evaluate] section (default: EvaluateConfig's defaults; one made in Python is checked here);
    with `config.artifact` (a bundle) it judges that bundle's artifacts instead (`evaluate_artifacts`). `device`
    (auto when None) holds every model attacked; the test points stay on the CPU and go there batch by batch.
    """
    c = config = validated(config or EvaluateConfig())
    if c.artifact is not None:  # each artifact of that bundle by its own onnxruntime outputs (evaluation/artifact.py)
        from .artifact import evaluate_artifacts

        return evaluate_artifacts(run, c)
    for name in c.attacks:  # (suite, norm and fab were checked by the config layer)
        get_attack(name, eps=c.eps, norm=c.norm)  # unknown names and bad ε/norm fail before any work
    get_attack("pgd", eps=c.eps, norm=c.norm)
    device = resolve_device(device)
    started = time.perf_counter()
    torch.manual_seed(c.seed)
    test = test_data(run, c.n)
    kept = {k: v for k, v in asdict(c).items() if k not in ("batch_size", "artifact")}  # artifact: not this path
    settings = {**kept, "curve_grid": c.curve_grid or None,
                "transfer": [str(o.path) for o in transfer], "ensemble": [str(o.path) for o in ensemble],
                "n": len(test)}  # what the results depend on: its hash is the entry's key
    key = records.settings_key(settings)
    for other in (*transfer, *ensemble):
        if other.input_shape != run.input_shape or other.num_classes != run.num_classes:
            raise EdgeRobustError(f"{other.path} takes inputs {other.input_shape} with {other.num_classes} classes but "
                                  f"{run.path} takes {run.input_shape} with {run.num_classes}; compare runs trained on "
                                  "the same dataset")
    images, labels = test.images, test.labels
    model = run.load_model().to(device)
    members = [str(run.path)]
    if ensemble:
        model = SoftmaxEnsemble([model] + [other.load_model() for other in ensemble]).to(device)
        members += [str(other.path) for other in ensemble]
    result: dict[str, Any] = {"run": str(run.path), "model": run.manifest["model"]["spec"], "created": now(),
                              "dataset": test.name, "split": "test", "n": len(test), "eps": c.eps, "norm": c.norm,
                              "seed": c.seed, "bound": "upper", "note": UPPER_BOUND_NOTE,
                              "device": describe_device(device)}
    if ensemble:
        result["ensemble"] = {"members": members, "combine": "mean of softmax, attacked end to end"}
    if c.suite == "standard":
        outcome = standard_suite(model, images, labels, c.eps, c.norm, seed=c.seed, batch_size=c.batch_size,
                                 progress=progress, n_restarts=c.n_restarts, steps=c.steps,
                                 square_queries=c.square_queries, n_target_classes=c.n_target_classes, fab=c.fab)
        result["suite"] = outcome.to_dict()
        result["clean_accuracy"], result["robust_accuracy"] = outcome.clean_accuracy, outcome.robust_accuracy
        points = records.save_points(run.path, key, outcome.adversarial, labels, torch.arange(len(test)),
                                     outcome.robust_mask)
        result["points"] = {"file": str(points.relative_to(run.path)), "indices": "the first n of the test split",
                            "robust": int(outcome.robust_mask.sum()),
                            "arrays": "x_adv (float32 pixels), labels, indices (int64), robust (bool)"}
    single = []
    for name in c.attacks:
        attack = get_attack(name, eps=c.eps, norm=c.norm, **({"seed": c.seed} if "seed" in _params(name) else {}))
        accuracy = robust_accuracy(model, images, labels, attack, c.batch_size, progress)
        single.append({**attack.describe(), "robust_accuracy": accuracy})
    if single:
        result["attacks"] = single
    if c.curve:
        result["curve"] = robustness_curve(model, images, labels, c.curve_grid or None, c.norm, steps=c.curve_steps,
                                           seed=c.seed, num_classes=test.num_classes, batch_size=c.batch_size,
                                           progress=progress)
    if transfer:
        models = {_label(run): model} | {_label(other): other.load_model().to(device) for other in transfer}
        if len(models) != 1 + len(transfer):
            raise EdgeRobustError("--transfer runs must be different directories from RUN and each other")
        attack = get_attack("pgd", eps=c.eps, norm=c.norm, steps=c.steps, seed=c.seed, early_exit=False)
        result["transfer"] = transfer_matrix(models, images, labels, attack, c.batch_size)
    if c.minimal:
        result["minimal"] = minimal_perturbations(model, images, labels, c.minimal, c.batch_size,
                                                  **({"norm": c.norm} if c.minimal != "cw" else {}))
    if c.masking_checks:
        result["masking"] = run_masking_checks(model, images, labels, result, c)
        result["masking_failed"] = masking.any_failed(result["masking"])
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["settings"], result["key"] = settings, key
    with locked(run.path, "run directory"):  # read-merge-write: one evaluation at a time adds its entry
        path = records.write_results(run.path, key, result)
        run.update("robustness", summarize(result))
        run.record_artifact("robustness", path)
    return result


def run_masking_checks(model, images, labels, result: dict[str, Any], config: EvaluateConfig) -> list[dict[str, Any]]:
    """The six gradient-masking checks on the points attacked, given the results so far (curve, suite, transfer)."""
    c = config
    return [masking.curve_monotone(result.get("curve")),
            masking.curve_reaches_chance(result.get("curve")),
            masking.large_eps(model, images, labels, c.norm, steps=2 * c.masking_steps, seed=c.seed,
                              batch_size=c.batch_size),
            masking.more_effort(model, images, labels, c.eps, c.norm, steps=c.masking_steps, seed=c.seed,
                                batch_size=c.batch_size),
            masking.black_box_not_stronger(result.get("suite")),
            masking.transfer_not_stronger(result.get("transfer"))]


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The manifest's "robustness" section: the headline numbers; the rest lives in robustness.json."""
    keys = ("eps", "norm", "n", "clean_accuracy", "robust_accuracy", "bound", "masking_failed", "seconds", "key",
            "device")
    out = {k: result[k] for k in keys if k in result}
    if "suite" in result:
        out["cumulative"] = result["suite"]["cumulative"]
    out["file"] = ROBUSTNESS_FILE
    return out


def _label(run: RunDir) -> str:
    return str(run.path)


def _params(name: str) -> set[str]:
    import inspect

    from ..attacks import ATTACKS

    return set(inspect.signature(ATTACKS.get(name)).parameters)
