"""Certification over many points under torchrun, as training runs (training/distributed.py): `torchrun
--nproc-per-node N -m edgerobust certify RUN …` gives every rank a contiguous share of the points
(`DistributedContext.shard`), each certifies its share of every artifact (rows, per-logit intervals, radii, Peck's
bounds: all per point), rank 0 gathers the shares in rank order and alone writes RUN/certificates.json, the same
document one process writes. The process group is gloo (the bound engine computes on the CPU); one that certify
joined it also leaves. One process: no group, one share of all the points.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.distributed as dist

from ..bounds import Arithmetic, Engine
from ..training import distributed
from ..training.distributed import DistributedContext
from .core import PointCertificates, certified_radius, certify_points
from .peck import peck_points


@dataclass
class Share:
    """One artifact's per-point results on a contiguous share of the points."""

    predicted: np.ndarray
    certs: list[PointCertificates] = field(default_factory=list)  # one per ε
    radii: dict[str, np.ndarray] = field(default_factory=dict)
    peck: dict[str, Any] | None = None


def join() -> tuple[DistributedContext | None, bool]:
    """torchrun's process group (joined here if the environment describes one) and whether certify joined it."""
    joined = dist.is_available() and dist.is_initialized()
    ctx = distributed.init_from_env("gloo")
    return ctx, ctx is not None and not joined


def leave(ctx: DistributedContext | None, owned: bool) -> None:
    if ctx is not None and owned:
        distributed.shutdown()


def worker_rank() -> bool:
    """A torchrun rank other than 0 (read from the environment: the group may be left already)."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return world not in ("", "0", "1") and rank.isdigit() and int(rank) != 0


def share_of(ctx: DistributedContext | None, n: int) -> slice:
    return slice(0, n) if ctx is None else ctx.shard(n)


def certify_share(engine: Engine, x: np.ndarray, labels: np.ndarray, eps: list[float], norm: str, method: str,
                  models: list[Arithmetic], budget: int, radius: bool, peck_mode: str | None,
                  peck_attacks: tuple[str, ...]) -> Share:
    """Everything certificates.json keeps per point, for these points (none: an empty share)."""
    import torch

    predicted = engine.output(torch.from_numpy(x)).argmax(1).numpy() if len(x) else np.zeros(0, np.int64)
    part = Share(predicted)
    if not len(x):
        return part
    thesis = peck_mode == "thesis"  # no certificate: no certified rows, no radii
    if peck_mode is not None:
        part.peck = peck_points(engine, x, predicted, peck_mode, peck_attacks)
    part.certs = [] if thesis else [certify_points(engine, x, labels, e, norm, method, models, budget,
                                                   intervals=True) for e in eps]
    if radius and not thesis:
        for model in models:
            if model.name == "fp16":
                continue  # worst-case fp16 accumulation: vacuous at real fan-ins, no radius worth a bisection
            if model.name == "real" and any(m.name == "int8" for m in models):
                continue  # int8's windows hold the exact QDQ function too: the same bounds, no second bisection
            part.radii[model.name] = certified_radius(engine, x, predicted, norm, method, model, budget=budget)
    return part


def merge(parts: list[Share]) -> Share:
    """The shares of consecutive parts of the points (rank order), as one."""
    full = [p for p in parts if len(p.predicted)]
    out = Share(np.concatenate([p.predicted for p in parts]))
    if not full:
        return out
    out.certs = [PointCertificates.join([p.certs[i] for p in full]) for i in range(len(full[0].certs))]
    out.radii = {m: np.concatenate([p.radii[m] for p in full]) for m in full[0].radii}
    if full[0].peck is not None:
        out.peck = {"kappa": np.concatenate([p.peck["kappa"] for p in full]),
                    "found": np.concatenate([p.peck["found"] for p in full]), "attacks": full[0].peck["attacks"]}
    return out


def gather(part: Share, ctx: DistributedContext | None) -> Share | None:
    """All ranks' shares merged on rank 0 (None on the other ranks); the share itself with one process."""
    if ctx is None:
        return part
    box = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(part, box, dst=0)
    return merge(box) if ctx.is_main else None


def broadcast(result: Any, ctx: DistributedContext | None) -> Any:
    """Rank 0's result on every rank, once rank 0 has written it."""
    return result if ctx is None else distributed.broadcast(result, ctx)
