"""Multi-process (DDP, gloo on CPU) training reaches the model one process reaches with the same global batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

from edgerobust.data import load_dataset
from edgerobust.errors import EdgeRobustError
from edgerobust.io import load_torch
from edgerobust.models import build_model
from edgerobust.training import TrainConfig, Trainer, build_training_loss
from edgerobust.training import distributed as D
from edgerobust.training.loop import LoopSetup

# 205 examples in batches of 30: the last batch (25) splits 13/12, so uneven shards are exercised too
CONFIG = dict(epochs=2, batch_size=30, augment=True, lr=0.05, seed=5)
# DDP sums the ranks' gradients in another order than one process does, so the two runs differ by rounding only,
# amplified over the steps (TRADES amplifies most). In float32 (unit roundoff u32 = 2**-24) that difference reached
# ~1e-5 on some CPUs, so the amplification is at most ~1e-5 / u32 ≈ 2e2 per unit of roundoff (allowing 1e-3 / u32
# ≈ 2e4 for safety). In float64 (u64 = 2**-53) the same amplification gives at most 2e4 · u64 ≈ 2e-12: a bound
# of 1e-10 holds with a 50× margin on any machine, while any real mismatch (a wrong shard, a wrong loss scale, a
# different random start) moves weights by ≥ 1e-4.
ROUNDING_AMPLIFICATION = 1e-3 / 2.0 ** -24
EXACT_TOL = 50 * ROUNDING_AMPLIFICATION * 2.0 ** -53
# the losses' accuracy metrics are float32 means (`.float().mean()`) of each shard, weighted by its size: each is
# within one float32 rounding (relative 2**-24 of a value ≤ 1) of the exact fraction, and so is their average
METRIC_TOL = 4 * 2.0 ** -24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(loss_name: str) -> Trainer:
    data = load_dataset("digits", "train").subset(205)
    torch.manual_seed(0)
    model = build_model("scnn2:8-16", data.input_shape, data.num_classes, data.mean, data.std)
    # random starts are drawn for the global batch and sliced, so each example's attack is the one-process one
    loss = None if loss_name == "natural" else build_training_loss(loss_name, eps=0.1, steps=2)
    return Trainer(model, data, TrainConfig(**CONFIG), LoopSetup(loss=loss, eval_data=load_dataset("digits", "test"),
                                                                 dtype=torch.float64), progress=False)


def _worker(rank: int, world: int, port: int, loss_name: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = D.init_from_env()
    assert ctx is not None and ctx.backend == "gloo" and ctx.world_size == world
    trainer = _trainer(loss_name)
    result = trainer.fit()
    torch.save({"model": trainer.model.state_dict(), "history": result.history}, f"{out}.rank{rank}")
    D.shutdown()
    # Leave without the interpreter's teardown: there torch's gloo threads can still be joinable when their owner is
    # destroyed, and std::terminate aborts the process (SIGABRT, "terminate called without an active exception")
    # after its work is done and saved; the results above are what the test checks.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.parametrize("loss_name", ["natural", "pgd-at", "fgsm-rs", "trades"])
def test_two_processes_reach_the_one_process_model(tmp_path, loss_name):
    out = str(tmp_path / "ddp")
    mp.spawn(_worker, args=(2, _free_port(), loss_name, out), nprocs=2, join=True)
    single = _trainer(loss_name)
    history = single.fit().history
    expected = single.model.state_dict()
    for rank in (0, 1):
        got = torch.load(f"{out}.rank{rank}", weights_only=True)
        for key, value in expected.items():
            assert value.dtype == torch.float64 or not value.is_floating_point()
            assert torch.allclose(got["model"][key], value, atol=EXACT_TOL, rtol=0), (rank, key)
        for mine, theirs in zip(got["history"], history, strict=True):
            # metrics are summed over ranks, evaluation is rank 0's, broadcast
            for key in ("train_loss", "train_accuracy", "test_accuracy", "train_adv_accuracy"):
                if key in theirs:
                    assert mine[key] == pytest.approx(theirs[key], abs=METRIC_TOL), key


FLOAT64_CLI = str(Path(__file__).with_name("float64_cli.py"))  # the CLI with float64 models (see EXACT_TOL)


def _torchrun_and_one_process(args: list[str], tmp_path) -> None:
    """The same edgerobust command, in float64, under `torchrun --nproc-per-node 2` into tmp/ddp and as one
    process into tmp/one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEROBUST_PROGRESS": "0"}
    for command in ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                     FLOAT64_CLI, *args, "--device", "cpu", "--out", str(tmp_path / "ddp")],
                    [sys.executable, FLOAT64_CLI, *args, "--device", "cpu", "--out", str(tmp_path / "one")]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command[2:4], done.stdout[-3000:], done.stderr[-3000:])  # say why


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    assert all(v.dtype == torch.float64 for k, v in a.items() if k.endswith((".weight", ".bias")))
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.allclose(a[k], b[k], atol=EXACT_TOL,
                                                                                    rtol=0) for k in a)


def test_torchrun_cli_two_processes_match_one(tmp_path):
    _torchrun_and_one_process(["train", "--model", "scnn2:8-16", "--epochs", "2", "--batch-size", "64", "--seed", "2",
                               "-q"], tmp_path)
    ddp, one = load_torch(tmp_path / "ddp" / "model.pt"), load_torch(tmp_path / "one" / "model.pt")
    assert _same_weights(ddp, one)
    manifest = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert manifest["training"]["distributed"] == {"world_size": 2, "backend": "gloo"}


def test_torchrun_compress_two_processes_match_one(tmp_path):
    """ADMM, masked retraining and physical removal under torchrun: rank 0 writes, the slim nets agree."""
    _torchrun_and_one_process(["compress", "--model", "scnn2:8-16", "--epochs", "2", "--admm-epochs", "2",
                               "--retrain-epochs", "1", "--keep", "0.5", "--batch-size", "64", "--seed", "3",
                               "--adv", "none", "--no-evaluate", "-q"], tmp_path)
    for stage in ("admm", "retrain", "."):
        ddp, one = load_torch(tmp_path / "ddp" / stage / "model.pt"), load_torch(tmp_path / "one" / stage / "model.pt")
        assert _same_weights(ddp, one), stage
    manifest = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert manifest["compression"]["removed_channels"]
    admm = json.loads((tmp_path / "ddp" / "admm" / "model.json").read_text())
    assert admm["training"]["distributed"] == {"world_size": 2, "backend": "gloo"}


@given(n=st.integers(0, 500), world=st.integers(1, 9))
def test_shards_partition_the_batch(n, world):
    shards = [D.DistributedContext(rank, world, rank, "gloo").shard(n) for rank in range(world)]
    assert shards[0].start == 0 and shards[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(shards, shards[1:], strict=False))
    sizes = [s.stop - s.start for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.init_from_env() is None and D.current() is None and D.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(EdgeRobustError, match="torchrun --nproc-per-node"):
        D.init_from_env()


@given(n=st.integers(1, 40), world=st.integers(1, 5), norm=st.sampled_from(["linf", "l2"]), seed=st.integers(0, 99))
def test_random_starts_of_shards_are_the_whole_batchs(n, world, norm, seed):
    from edgerobust.attacks.base import random_start

    x = torch.rand((n, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    whole = random_start(x, 0.1, norm, torch.Generator().manual_seed(seed))
    shards = [D.DistributedContext(rank, world, rank, "gloo").shard(n) for rank in range(world)]
    parts = [random_start(x[s], 0.1, norm, torch.Generator().manual_seed(seed), (s.start, n)) for s in shards]
    assert torch.equal(torch.cat(parts), whole)


@pytest.mark.parametrize("clean", [True, False])
def test_leave_destroys_the_process_group(tmp_path, clean):
    """The CLI leaves its process group before the interpreter's teardown (gloo aborted there: SIGABRT under
    torchrun after the work was done)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    D.leave(clean)
    assert not dist.is_initialized()
    D.leave(clean)  # not in a group: nothing to do


@pytest.mark.parametrize("argv,clean", [(["losses"], True), (["train", "--model", "no-such-model"], False)])
def test_the_cli_leaves_with_its_exit_status(monkeypatch, argv, clean):
    from edgerobust.cli.app import main

    left = []
    monkeypatch.setattr(D, "leave", lambda clean: left.append(clean))
    monkeypatch.setattr(sys, "argv", ["edgerobust", *argv])
    with pytest.raises(SystemExit):
        main()
    assert left == [clean]
