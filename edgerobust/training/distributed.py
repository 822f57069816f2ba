"""Multi-process training through PyTorch's own engine (DistributedDataParallel): gloo on CPU, NCCL on GPU.

Launch with `torchrun --nproc-per-node N -m edgerobust train …`; torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT) is all the set-up needed. Every rank draws the same global batch (same
seeded shuffle and augmentation) and trains on its own contiguous shard of it; losses are rescaled so DDP's
gradient average equals the gradient of the global batch's mean loss, so N processes with global batch B
follow one process with batch B. Rank 0 alone writes files and shows progress.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import EdgeRobustError


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of n (sizes differ by at most one)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise EdgeRobustError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; "
                              "launch with torchrun") from None


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_from_env(backend: str | None = None) -> DistributedContext | None:
    """Join the process group torchrun described in the environment; None when running as one process."""
    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if env_world_size() <= 1:
            return None
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise EdgeRobustError(f"WORLD_SIZE is set but {', '.join(missing)} is not; launch multi-process training "
                                  "with `torchrun --nproc-per-node N -m edgerobust …`")
        backend = backend or default_backend()
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return current()


def current() -> DistributedContext | None:
    """The process group this process belongs to, if it has more than one member."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                              dist.get_backend())


def is_main_process() -> bool:
    ctx = current()
    return ctx is None or ctx.is_main


def wrap(model: nn.Module, ctx: DistributedContext) -> DistributedDataParallel:
    # single-input-channel conv weights get grads with an equivalent but differently-strided layout: harmless
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (parameter names are the plain model's)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sums(values: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    """Sum per-rank running totals (examples seen, correct, loss sums) across ranks; same keys on every rank."""
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist(), strict=True))


def broadcast(obj: Any, ctx: DistributedContext) -> Any:
    """Rank 0's `obj` on every rank (e.g. evaluation metrics computed once)."""
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistributedContext | None) -> None:
    if ctx is not None:
        dist.barrier()


def finished_run(path, ctx: DistributedContext):
    """On a rank other than 0: wait until rank 0 has written run directory `path` (its `barrier` after the
    write), then open it. The ranks must share a file system (always so with `torchrun --standalone`)."""
    from ..run import RunDir

    barrier(ctx)
    return RunDir.open(path)


def shutdown() -> None:
    """Leave the process group once every rank is done with it: without the barrier a rank that finishes first tears
    its connections down while a slower one still talks through them, and gloo aborts that process."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def leave(clean: bool) -> None:
    """Leave the process group, if this process joined one, before the interpreter's teardown: there gloo's threads
    can still be joinable when their owner is destroyed, and std::terminate aborts the process (SIGABRT) after its
    work is done. After a command that succeeded every rank meets at `shutdown`'s barrier; after one that failed the
    group is destroyed without it (the other ranks may never arrive; torchrun stops them)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean:
        shutdown()
    else:
        dist.destroy_process_group()
