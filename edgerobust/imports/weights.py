"""Your weights: a run directory from a model trained elsewhere (a state dict in .pt or .safetensors).

`import_weights(out, spec, weights, ...)` builds the model (zoo spec, import path or entry point; models/external.py),
loads the state dict — a .pt through `io.load_torch` (`torch.load(weights_only=True)`: tensors only, never code), a
.safetensors through the `safetensors` package — and writes `out/model.pt` + `model.json` like `train` does, with an
`imported` section (file, format, sha256, how the keys were matched). Keys may be the bare network's (`conv.weight`),
edgerobust's own (`net.conv.weight`, `normalize.mean`), or carry DataParallel's `module.` prefix; a checkpoint
holding the state dict under `state_dict`, `model` or `model_state_dict` is unwrapped. Missing and unexpected keys and
shape mismatches are one line naming them; with a dataset, the clean test accuracy is measured and recorded.
Everything is checked before `out` is created, so a failed import writes nothing.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..claim import check_output, locked
from ..compute_device import describe_device, resolve_device
from ..errors import CheckpointError, EdgeRobustError
from ..io import load_torch, sha256_file
from ..models import build_model, count_flops, count_parameters
from ..run import RunDir
from ..training.api import check_fresh_output, model_info, normalization
from ..training.metrics import evaluate_clean
from .setup import ImportSetup

FORMATS = {".pt": "pt", ".pth": "pt", ".bin": "pt", ".safetensors": "safetensors"}
NESTED_KEYS = ("state_dict", "model_state_dict", "model")
SHOWN = 4  # names listed per kind of mismatch before "+N more"


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The named tensors in `path` and how they were found (format, the key they were nested under)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise CheckpointError(f"{path}: weights must be a .pt/.pth (torch.save of a state dict) or .safetensors file")
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    found: dict[str, Any] = {"format": kind}
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path} is not a readable .safetensors file ({reason})") from None
    else:
        state = load_torch(path)
        if isinstance(state, Mapping):
            nested = [k for k in NESTED_KEYS if isinstance(state.get(k), Mapping)]
            if nested and not any(isinstance(v, torch.Tensor) for v in state.values()):
                found["nested_under"] = nested[0]
                state = state[nested[0]]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} does not hold a state dict (a table of named tensors); save one with "
                              "torch.save(model.state_dict(), path)")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries {', '.join(bad[:SHOWN])} are not named tensors; save "
                              "model.state_dict()")
    return dict(state), found


def match_keys(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict with keys of the wrapped model (`normalize.*`, `net.*`), and which naming it came in."""
    state = dict(state)
    how = "network"
    if state and all(k.startswith("module.") for k in state):
        state, how = {k[len("module."):]: v for k, v in state.items()}, "network, DataParallel 'module.' prefix"
    if any(k.startswith("net.") for k in state) and all(k.startswith(("net.", "normalize.")) for k in state):
        how = "edgerobust"
        normalize = {k: v for k, v in model.state_dict().items() if k.startswith("normalize.")}
        return {**normalize, **state}, how  # the file's own normalisation, where it holds one, wins
    return {**{k: v for k, v in model.state_dict().items() if k.startswith("normalize.")},
            **{f"net.{k}": v for k, v in state.items()}}, how


def fit_problems(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Missing and unexpected keys and shape mismatches, by name (network names, without `net.`)."""
    own = model.state_dict()
    short = lambda k: k[4:] if k.startswith("net.") else k  # noqa: E731
    problems = []
    missing = [short(k) for k in own if k not in state]
    unexpected = [short(k) for k in state if k not in own]
    shapes = [f"{short(k)} {tuple(state[k].shape)} in the file vs {tuple(v.shape)} in the model"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if names:
            more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
            problems.append(f"{label}: {', '.join(names[:SHOWN])}{more}")
    return problems


def import_weights(out: str | Path, spec: str, weights: str | Path, setup: ImportSetup | None = None) -> RunDir:
    """A run directory at `out` holding `spec` with the weights of `weights` (see the module docstring); `setup` says
    the dataset, or the input shape and classes without one, and the factory's kwargs and mean/std."""
    setup = setup or ImportSetup()
    if (setup.model_options or {}).get("pca") is not None:
        raise EdgeRobustError("[model] pca is fitted on the training split by `edgerobust train`; imported weights "
                              "come without it: drop pca from the recipe's [model]")
    check_output(out)
    check_fresh_output(Path(out), resume=False)
    device = resolve_device(setup.device)
    data, input_shape, num_classes, model_options = setup.data, setup.input_shape, setup.num_classes, \
        setup.model_options
    test = setup.load("test") if data else None
    if test is not None:
        if input_shape is not None and tuple(input_shape) != test.input_shape:
            raise EdgeRobustError(f"--shape {tuple(input_shape)} differs from dataset {data}'s {test.input_shape}; "
                                  "drop --shape or resize the data ([data] options shape)")
        input_shape, classes = test.input_shape, test.num_classes
        if num_classes is not None and num_classes != classes:
            raise EdgeRobustError(f"--classes {num_classes} differs from dataset {data}'s {classes} classes")
        num_classes = classes
    if input_shape is None or num_classes is None:
        raise EdgeRobustError("without --data, give the model's input --shape C,H,W and its number of --classes")
    state, found = read_state_dict(weights)
    channels = int(input_shape[0])
    stats = SimpleNamespace(input_shape=tuple(input_shape), num_classes=num_classes,  # what model_info reads
                            mean=test.mean if test else (0.0,) * channels, std=test.std if test else (1.0,) * channels)
    mean, std = normalization(spec, stats, model_options)
    source: dict[str, Any] = {}
    model = build_model(spec, input_shape, num_classes, mean, std, kwargs=(model_options or {}).get("kwargs"),
                        source=source)
    state, how = match_keys(model, state)
    problems = fit_problems(model, state)
    if problems:
        raise CheckpointError(f"weights {weights} do not fit model '{spec}': {'; '.join(problems)}")
    model.load_state_dict(state)
    model.eval()
    metrics: dict[str, Any] = {"parameters": count_parameters(model), "flops": count_flops(model, input_shape)}
    if test is not None:
        metrics["test_accuracy"] = evaluate_clean(model.to(device), test)["accuracy"]
    imported = {"weights": str(Path(weights).resolve()), "sha256": sha256_file(weights), "keys": how, **found,
                "device": describe_device(device)}
    sections: dict[str, Any] = {"imported": imported, "metrics": metrics, "recipe": setup.recipe or {}}
    if test is not None:
        sections["dataset"] = setup.dataset_record(test)
    with locked(out):
        check_fresh_output(Path(out), resume=False)
        run = RunDir.create(out)
        run.save_model(model, model_info(spec, stats, (mean, std), source), **sections)
    return run
