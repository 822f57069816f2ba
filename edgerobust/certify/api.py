"""`certify_bundle`: certificates for every model file of an export bundle, into RUN/certificates.json.

Points: the bundle's golden inputs and labels (real test images the export saved; the first `n`). Per precision
(artifact file, its sha256 checked against the bundle manifest) and per arithmetic model declared for that
precision: certified accuracy (certified and correctly classified), robust error bound (1 - that), per point the
largest certified ε by bisection and its mean, beside the attacks' robust accuracy from robustness.json when the
run has one at the same ε and norm (Barmpas Tables 8.12/8.13: the lower bound beside the attacks' upper bound).
Every row keeps its per-point certified flags and margin lower bounds (`points`), which `edgerobust certify RUN
--host` checks the device's own outputs against (remote/certify_check.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..bounds import ARITHMETIC_MODELS, Engine, from_onnx
from ..bounds.engine import DEFAULT_BUDGET, METHODS
from ..errors import EdgeRobustError
from ..io import sha256_file, write_json
from ..run import RunDir
from . import shard
from .lipschitz import GLOBAL_METHODS
from .peck import DEFAULT_ATTACKS, check_attacks, check_graph, check_mode, peck_summary
from .vnnlib import check_out, export_vnnlib

CERTIFICATES_FILE = "certificates.json"
CERTIFY_METHODS = (*METHODS, *GLOBAL_METHODS)
FORMAT = "edgerobust-certificates-1"

# Which arithmetic models may be claimed for an artifact of each storage precision. Until the precision table
# records this per runtime, the fp16 entry names both kernels the runtimes declare: fp32 accumulation (x86
# onnxruntime, tensor cores) and fp16 accumulation (native aarch64 kernels). int8: onnxruntime's QDQ kernels
# (bounds/arithmetic.py `int8`: the assumptions are in the certificate's model description).
DECLARED: dict[str, tuple[str, ...]] = {"fp32": ("real", "fp32"), "fp16": ("real", "fp16-fp32acc", "fp16"),
                                        "int8": ("real", "int8")}
# Precisions whose artifacts are refused, and why: a bound must hold for what the artifact computes.
NOT_BOUNDED: dict[str, str] = {}
# ... and by the Lipschitz methods only: a rounding is discontinuous
NO_LIPSCHITZ: dict[str, str] = {
    "int8": "its rounding is discontinuous, so it has no Lipschitz constant; certify int8 with ibp, crown or "
            "alpha-crown"}


class CertifyError(EdgeRobustError):
    """Bad certification input: ε, a label, a bundle whose artifact does not match its manifest, a model."""


def check_eps(eps: list[float]) -> list[float]:
    for e in eps:
        if not 0.0 <= e <= 1.0:
            raise CertifyError(f"--eps {e:g} is outside [0, 1] (pixel scale; e.g. 2/255)")
    return eps


def models_for(precision: str, wanted: list[str] | None) -> list:
    declared = DECLARED.get(precision)
    if precision in NOT_BOUNDED:
        raise CertifyError(f"{precision} artifacts cannot be certified: {NOT_BOUNDED[precision]}; certify fp32 or fp16")
    if declared is None:
        raise CertifyError(f"no arithmetic model is declared for {precision} artifacts; certify one of "
                           f"{', '.join(DECLARED)}")
    for name in wanted or []:
        ARITHMETIC_MODELS.get(name)  # unknown names: one line listing the known ones
        if name not in declared:
            raise CertifyError(f"arithmetic model {name} is not declared for {precision} artifacts "
                               f"(declared: {', '.join(declared)})")
    return [ARITHMETIC_MODELS.get(n) for n in (wanted and [n for n in wanted if n in declared]) or declared]


def _attacks(run: RunDir, eps: float, norm: str) -> float | None:
    path = run.path / "robustness.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return None
    same_norm = str(data.get("norm", "linf")).lstrip("l") == norm
    if isinstance(data.get("eps"), (int, float)) and abs(data["eps"] - eps) < 1e-12 and same_norm:
        value = data.get("robust_accuracy")
        return float(value) if isinstance(value, (int, float)) else None
    return None


def point_bounds(certified: np.ndarray, bounds: np.ndarray,
                 intervals: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Per point: certified (and correctly classified), and the lower bound of y_label - y_j over the ball in the
    row's arithmetic (null in the label's column and where none is finite): what device outputs must respect.
    With `intervals`, also each computed logit's [lower, upper] over the ball (`logit_lower`, `logit_upper`), kept
    for the certified points only (null for the others: nothing is checked there). Every bound is written with 9
    significant digits rounded outward (lower bounds down, upper bounds up), so it stays a bound and the file small."""
    out = {"certified": [bool(c) for c in certified],
           "margin_lower": [[outward(v, down=True) for v in row] for row in bounds]}
    if intervals is not None:
        for key, values, down in zip(("logit_lower", "logit_upper"), intervals, (True, False), strict=True):
            out[key] = [[outward(v, down) for v in row] if ok else None
                        for ok, row in zip(certified, values, strict=True)]
    return out


def outward(v: float, down: bool, digits: int = 9) -> float | None:
    """`v` to `digits` significant decimal digits, rounded down (or up) so that the result is <= v (>= v); None where
    not finite."""
    if not np.isfinite(v):
        return None
    v = float(v)
    mantissa, exponent = f"{v:.{digits - 1}e}".split("e")
    r = float(f"{mantissa}e{exponent}")
    if (down and r > v) or (not down and r < v):
        step = 10.0 ** (int(exponent) - digits + 1)
        r = float(f"{float(mantissa) + (-1 if down else 1) * 10.0 ** (1 - digits):.{digits - 1}f}e{exponent}")
        if (down and r > v) or (not down and r < v):  # the decimal step did not cross in binary: take a whole step
            r = v - step if down else v + step
    return r


def certify_bundle(bundle: str | Path, eps: list[float], method: str = "crown", norm: str = "inf", n: int = 16,
                   arithmetic: list[str] | None = None, precisions: list[str] | None = None, radius: bool = True,
                   budget: int = DEFAULT_BUDGET, run: RunDir | None = None,
                   vnnlib: str | Path | None = None, peck_mode: str | None = None,
                   peck_attacks: tuple[str, ...] = DEFAULT_ATTACKS) -> dict[str, Any]:
    """Certify the bundle's artifacts; write RUN/certificates.json (RUN: `run`, else the bundle's parent run).

    `vnnlib`: also write the fp32 artifact's VNN-LIB benchmark there (vnnlib.py) at the first ε.
    `method="peck"`: each artifact also gets a `peck` entry (peck.py): Peck's per-point lower bounds κ on the
    minimal L2 perturbation in `peck_mode` (sound, the default, or thesis) checked against the `peck_attacks`'
    smallest perturbations. A thesis-mode bound is no certificate: that mode writes no certified rows or radii."""
    bundle = Path(bundle)
    check_eps(eps)
    if method not in CERTIFY_METHODS:
        raise CertifyError(f"unknown method '{method}'; choose one of {', '.join(CERTIFY_METHODS)}")
    if peck_mode is not None and method != "peck":
        raise CertifyError(f"--peck-mode {peck_mode} applies to --method peck only (got --method {method})")
    peck_mode = check_mode(peck_mode or "sound") if method == "peck" else None
    if peck_mode is not None:
        check_attacks(peck_attacks)
    if norm not in ("inf", "2"):
        raise CertifyError(f"unknown norm '{norm}'; choose inf or 2")
    from ..export.bundle import read_manifest

    if vnnlib is not None:
        if norm != "inf":
            raise CertifyError("--export-vnnlib writes L-inf properties (VNN-LIB boxes); use --norm inf")
        check_out(Path(vnnlib))

    manifest = read_manifest(bundle)
    inputs = np.load(bundle / "golden_inputs.npy")[:n].astype(np.float64)
    labels = np.load(bundle / "golden_labels.npy")[:n].astype(np.int64)
    refused = {**NOT_BOUNDED, **(NO_LIPSCHITZ if method in GLOBAL_METHODS else {})}
    chosen = precisions or [p for p in DECLARED if p in manifest["models"] and p not in refused]
    not_certified = {p: refused[p] for p in manifest["models"] if p in refused and not precisions}
    plans = []
    for precision in chosen:  # every check before any work
        if precision not in manifest["models"]:
            raise CertifyError(f"the bundle has no {precision} model (it has {', '.join(manifest['models'])})")
        if precision in NO_LIPSCHITZ and method in GLOBAL_METHODS:
            raise CertifyError(f"{method} cannot certify {precision} artifacts: {NO_LIPSCHITZ[precision]}")
        name = manifest["models"][precision]["file"]
        digest = sha256_file(bundle / name)
        if manifest["files"].get(name, {}).get("sha256") != digest:
            raise CertifyError(f"{bundle / name} does not match its bundle (sha256 differs from the manifest); "
                               "re-export or restore the file")
        plans.append((precision, name, digest, models_for(precision, arithmetic)))
        if peck_mode == "thesis":  # a graph the thesis has no rule for: refused before any work
            check_graph(Engine(from_onnx(onnx.load(bundle / name))))
    if run is None:
        if not (bundle.parent / "model.json").is_file():
            raise CertifyError(f"{bundle} is not inside a run, so certificates.json has nowhere to go; pass the run "
                               "it was exported from (edgerobust certify RUN)")
        run = RunDir.open(bundle.parent)
    started = time.perf_counter()
    ctx, owned = shard.join()  # torchrun: each rank certifies its share of the points, rank 0 writes (shard.py)
    result = _certify_plans(bundle, plans, inputs, labels, eps, method, norm, budget, radius, run, peck_mode,
                            peck_attacks, not_certified, ctx)
    if result is not None:
        result["seconds"] = round(time.perf_counter() - started, 3)
        _write(run, bundle, result, plans, inputs, labels, eps, vnnlib, method, norm)
    result = shard.broadcast(result, ctx)
    shard.leave(ctx, owned)  # (after an error torchrun ends the other ranks: no barrier to wait in)
    return result


def _certify_plans(bundle, plans, inputs, labels, eps, method, norm, budget, radius, run, peck_mode, peck_attacks,
                   not_certified, ctx) -> dict[str, Any] | None:
    """The certificates document (on rank 0 under torchrun; None on the other ranks)."""
    artifacts = []
    points = shard.share_of(ctx, len(inputs))
    for precision, name, digest, models in plans:
        engine = Engine(from_onnx(onnx.load(bundle / name)))
        part = shard.gather(shard.certify_share(engine, inputs[points], labels[points], eps, norm, method, models,
                                                budget, radius, peck_mode, peck_attacks), ctx)
        if part is None:
            continue
        correct = part.predicted == labels
        rows = []
        for e, certs in zip(eps, part.certs, strict=False):  # none in thesis mode: no certificate
            for model in models:
                ok = certs.certified[model.name] & correct
                rows.append({"eps": e, "arithmetic": model.name, "certified_accuracy": float(ok.mean()),
                             "robust_error_bound": float(1 - ok.mean()), "vacuous": certs.vacuous.get(model.name),
                             "attack_robust_accuracy": _attacks(run, e, norm),
                             "points": point_bounds(ok, certs.bounds[model.name], certs.intervals[model.name])})
        radii = {m: {"per_point": r.tolist(), "mean": float(r.mean())} for m, r in part.radii.items()}
        peck = None if part.peck is None else peck_summary(part.peck, correct, peck_mode, eps, norm,
                                                          int(np.prod(inputs.shape[1:])))
        artifacts.append({"precision": precision, "file": name, "sha256": digest,
                          "clean_accuracy": float(correct.mean()),
                          "arithmetic_models": [m.describe() for m in models], "rows": rows, "radius": radii,
                          **({} if peck is None else {"peck": peck})})
    if ctx is not None and not ctx.is_main:
        return None
    return {"format": FORMAT, "bundle": str(bundle), "method": method, "norm": norm, "n": int(len(inputs)),
            **({} if peck_mode is None else {"peck_mode": peck_mode}),
            "points": "the bundle's golden inputs and labels", "clean_accuracy": artifacts[0]["clean_accuracy"],
            "radius_of": "the predicted class", "artifacts": artifacts, "not_certified": not_certified,
            **({} if ctx is None else {"sharded": {"world_size": ctx.world_size, "backend": ctx.backend}})}


def _write(run, bundle, result, plans, inputs, labels, eps, vnnlib, method, norm) -> None:
    if vnnlib is not None:
        first = next(p for p in plans if p[0] == "fp32") if any(p[0] == "fp32" for p in plans) else plans[0]
        classes = int(np.load(bundle / "golden_outputs.npy").shape[1])
        result["vnnlib"] = str(export_vnnlib(vnnlib, bundle / first[1], inputs, labels, classes, eps[0]).parent)
    write_json(run.path / CERTIFICATES_FILE, result)
    run.update("certify", {"file": CERTIFICATES_FILE, "method": method, "norm": norm, "eps": eps,
                           "bundle": str(bundle), **({"sharded": result["sharded"]} if "sharded" in result else {})})
