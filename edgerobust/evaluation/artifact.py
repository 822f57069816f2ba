"""Robustness per precision: the exported artifacts (fp32, fp16, int8) attacked and replayed as they run.

A model can be robust in float and not in int8 or the other way round, and attacks exist that exploit exactly the
divergence between a float model and its quantized deployment, so each ONNX artifact of an export bundle is judged
by its own onnxruntime outputs: (1) transfer: the run's saved adversarial sets (RUN/adversarial/<key>.npz, found by
`evaluate` against the PyTorch model) replayed on it; (2) query-only: Square with the suite's budget driven by the
artifact's outputs (`OrtClassifier`: an onnxruntime session as a torch callable); (3) gradient-based: APGD-CE
through the artifact's differentiable surrogate (evaluation/surrogate.py: its own graph with QuantizeLinear as
straight-through fake quantization), the points found judged on the artifact. A point is robust for an artifact
when it is classified correctly clean and under every source (the minimum over sources, an upper bound like the
suite's). The divergence counts the points whose prediction differs from the fp32 artifact's, clean and on each
attacked set. Written to RUN/precision_robustness.json; the report's precision table reads it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks import get_attack
from ..bounds.graph import BoundError
from ..claim import locked
from ..config import EvaluateConfig, validated
from ..data import load_dataset
from ..errors import EdgeRobustError
from ..io import read_json, write_json
from ..run import RunDir, now
from ..runner.errors import RunnerError
from ..runner.precisions import REFERENCE
from ..runner.sealed import check_hashes, open_bundle
from . import masking
from .surrogate import ArtifactSurrogate

FILE = "precision_robustness.json"
GRADIENT = "gradient:apgd-ce"  # the source name of (3)


class OrtClassifier(nn.Module):
    """An onnxruntime CPU session as a torch callable (forward only): float32 pixels in, float32 logits out on the
    input's device. Query attacks (Square) see exactly the artifact's outputs; there is no gradient."""

    def __init__(self, path: str | Path, threads: int = 1):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types)
            raise EdgeRobustError(f"onnxruntime cannot load {Path(path).name}: {str(exc).strip()[:200]}") from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32, copy=False)})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def predict(model: nn.Module, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(x[i:i + batch]).argmax(1).cpu().numpy() for i in range(0, len(x), batch)]) \
            if len(x) else np.zeros(0, dtype=np.int64)


def saved_sets(run: RunDir) -> dict[str, dict[str, Any]]:
    """The adversarial sets `evaluate` saved, by key, with the ε and norm of their robustness.json entry."""
    directory = run.path / "adversarial"
    entries = {}
    if run.file("robustness.json").is_file():
        entries = (read_json(run.file("robustness.json")).get("results") or {})
    sets = {}
    for path in sorted(directory.glob("*.npz")) if directory.is_dir() else []:
        with np.load(path, allow_pickle=False) as data:
            if not {"x_adv", "labels", "indices"} <= set(data.files):
                raise EdgeRobustError(f"{path} lacks x_adv, labels or indices; re-run `edgerobust evaluate`")
            entry = entries.get(path.stem) or {}
            sets[path.stem] = {"x_adv": data["x_adv"].astype(np.float32), "labels": data["labels"].astype(np.int64),
                               "indices": data["indices"].astype(np.int64), "eps": entry.get("eps"),
                               "norm": entry.get("norm", "linf")}
    return sets


def open_artifacts(bundle: str | Path) -> tuple[Any, dict[str, Path]]:
    """The sealed, hash-checked bundle (the runner's rule) and its ONNX artifact per precision."""
    try:
        opened = open_bundle(str(bundle))
        check_hashes(opened)
    except RunnerError as exc:
        raise EdgeRobustError(f"bundle {bundle}: {exc.message}") from None
    models = opened.manifest.get("models") or {}
    return opened, {p: Path(opened.path(e["file"], f"models.{p}")) for p, e in models.items()
                    if str(e.get("file", "")).endswith(".onnx")}


def surrogate_masking(surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, robust_by: dict[str, np.ndarray],
                      eps: float, config: EvaluateConfig) -> list[dict[str, str]]:
    """The gradient-masking checks that apply to the surrogate's gradients: a very large ε reaches about 0%, more
    steps or restarts change little (both on the surrogate), and the query attack on the artifact breaks at most
    AutoAttack's 0.2% of the points beyond what the gradient attack broke (else the surrogate's gradients mislead)."""
    checks = [masking.large_eps(surrogate, x, y, "linf", steps=2 * config.masking_steps, seed=config.seed,
                                batch_size=config.batch_size),
              masking.more_effort(surrogate, x, y, eps, "linf", steps=config.masking_steps, seed=config.seed,
                                  batch_size=config.batch_size)]
    name = "the query attack is not stronger than the gradient attack through the surrogate"
    if "square" not in robust_by:
        return [*checks, masking.check(name, masking.NOT_RUN, "no Square source")]
    extra = float(np.mean(robust_by[GRADIENT] & ~robust_by["square"]))  # broken by Square only, of all points
    status = masking.FAIL if extra > masking.BLACK_BOX_TOLERANCE else masking.PASS
    return [*checks, masking.check(name, status, f"Square broke {extra:.2%} of all points that APGD-CE through the "
                                                 f"surrogate left (rule: at most {masking.BLACK_BOX_TOLERANCE:.1%})")]


def evaluate_artifacts(run: RunDir | str | Path, config: EvaluateConfig | None = None, *,
                       bundle: str | Path | None = None, square: bool = True, gradient: bool = True,
                       write: bool = True) -> dict[str, Any]:
    """Clean and robust accuracy of every ONNX artifact in the bundle (`bundle`, else `config.artifact`) on the
    points of the run's saved adversarial sets: transfer (each set replayed), Square (`config.square_queries`,
    `config.seed`) on the artifact's own outputs and APGD-CE (`config.steps`, `config.n_restarts`) through its
    differentiable surrogate, at the ε the sets were found at (`config.eps` when they record none: every source shares
    one ball); robust per point = the minimum over sources; divergence from fp32."""
    config = validated(config or EvaluateConfig())
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    bundle = bundle if bundle is not None else config.artifact
    if bundle is None:
        raise EdgeRobustError("evaluate_artifacts needs a bundle: pass --artifact BUNDLE (an export of the run)")
    queries, seed = config.square_queries, config.seed
    opened, artifacts = open_artifacts(bundle)
    sets = saved_sets(run)
    if not sets:
        raise EdgeRobustError(f"run {run.path} has no saved adversarial sets (RUN/adversarial/*.npz); run "
                              "`edgerobust evaluate` on it first")
    if list(opened.manifest.get("input_shape") or []) != list(run.input_shape):
        raise EdgeRobustError(f"bundle {bundle} takes inputs {opened.manifest.get('input_shape')} but run "
                              f"{run.path} has {list(run.input_shape)}; pass the run's own bundle")
    first = next(iter(sets.values()))
    indices, labels = first["indices"], first["labels"]
    for key, s in sets.items():
        if not np.array_equal(s["indices"], indices):
            raise EdgeRobustError(f"saved set {key} attacks other test points than {next(iter(sets))}; evaluate "
                                  "both on the same --n")
    test = load_dataset(run.dataset_name, "test", run.data_root, **run.data_options)
    x = test.images[torch.from_numpy(indices)]
    y = torch.from_numpy(labels)
    eps_values = {s["eps"] for s in sets.values() if s["eps"] is not None}
    attack_eps = max(eps_values) if eps_values else config.eps
    started = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    for precision, path in artifacts.items():
        model = OrtClassifier(path)
        clean = predict(model, x)
        correct = clean == labels
        sources = {f"transfer:{key}": predict(model, torch.from_numpy(s["x_adv"])) for key, s in sets.items()}
        if square:
            adv = x.clone()
            attack = get_attack("square", eps=attack_eps, norm="linf", queries=queries, seed=seed)
            if correct.any():
                chosen = torch.from_numpy(np.nonzero(correct)[0])
                adv[chosen] = attack(model, x[chosen], y[chosen])
            sources["square"] = predict(model, adv)
        skipped = {}
        try:
            surrogate = ArtifactSurrogate(path) if gradient else None
        except BoundError as exc:  # an operator without a rule: this artifact is judged by the other sources
            surrogate, skipped[GRADIENT] = None, str(exc)
        if surrogate is not None:  # (3) APGD-CE through the artifact's differentiable surrogate, judged on it
            adv = x.clone()
            attack = get_attack("apgd-ce", eps=attack_eps, norm="linf", steps=config.steps,
                                restarts=config.n_restarts, seed=seed)
            if correct.any():
                chosen = torch.from_numpy(np.nonzero(correct)[0])
                adv[chosen] = attack(surrogate, x[chosen], y[chosen])
            sources[GRADIENT] = predict(model, adv)
        robust_by = {k: (p == labels) & correct for k, p in sources.items()}
        robust = np.logical_and.reduce([correct, *robust_by.values()])
        rows[precision] = {"file": path.name, "clean_accuracy": float(correct.mean()),
                           "robust_accuracy": float(robust.mean()),
                           "robust_by_source": {k: float(v.mean()) for k, v in robust_by.items()},
                           "sources_skipped": skipped,
                           "points": {"clean": clean.tolist(), "robust": robust.astype(int).tolist(),
                                      **{k: p.tolist() for k, p in sources.items()}}}
        if surrogate is not None and config.masking_checks:
            rows[precision]["masking"] = surrogate_masking(surrogate, x, y, robust_by, attack_eps, config)
            rows[precision]["masking_failed"] = masking.any_failed(rows[precision]["masking"])
    if REFERENCE in rows:
        ref = rows[REFERENCE]["points"]
        for precision, row in rows.items():
            if precision != REFERENCE:
                row["divergence"] = {k: int(np.sum(np.asarray(ref[k]) != np.asarray(row["points"][k])))
                                     for k in ref if k != "robust"}
    result = {"created": now(), "bundle": str(bundle), "bundle_sha256": opened.sha256,
              "target": opened.manifest.get("target"), "n": len(labels), "indices": indices.tolist(),
              "labels": labels.tolist(), "eps": attack_eps, "norm": "linf",
              "sources": [*(f"transfer:{k}" for k in sets), *(["square"] if square else []),
                          *([GRADIENT] if gradient else [])],
              "gradient": {"attack": "apgd-ce", "steps": config.steps, "restarts": config.n_restarts, "seed": seed,
                           "through": "the artifact's own graph in float64, QuantizeLinear as round half to even with "
                                      "saturation and a straight-through gradient (evaluation/surrogate.py); the "
                                      "points found are judged on the artifact"} if gradient else None,
              "square": {"queries": queries, "seed": seed, "driven_by": "each artifact's onnxruntime outputs"}
              if square else None,
              "robust_rule": "robust = correct clean and under every source (minimum over sources; an upper bound)",
              "precisions": rows, "seconds": time.perf_counter() - started}
    if write:
        with locked(run.path, "run directory"):
            path = write_json(run.file(FILE), result)
            run.record_artifact("precision_robustness", path)
            run.update("precision_robustness", {
                "file": FILE, "bundle": run.relative(bundle), "eps": attack_eps, "n": len(labels),
                **{p: {"clean": r["clean_accuracy"], "robust": r["robust_accuracy"]} for p, r in rows.items()}})
    return result
