"""Certified training: the PyTorch graph source agrees with the exported artifact's, and the IBP / CROWN-IBP losses
(training/certified.py) bound the clean loss from above, train, and are selectable by name."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgerobust.bounds import Ball, BoundError, Engine, from_module, from_onnx
from edgerobust.config import TrainConfig
from edgerobust.data import load_dataset
from edgerobust.export.onnx_export import simplify, to_onnx
from edgerobust.models import build_model
from edgerobust.models.normalize import NormalizedClassifier
from edgerobust.training import LOSSES, LoopSetup, StepState, Trainer, build_training_loss
from edgerobust.training.certified import crown_margins, ibp_margins, worst_logits


def chain(seed: int) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 8),
                         nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        body[1].running_mean.uniform_(-0.2, 0.2)
        body[1].running_var.uniform_(0.5, 2.0)
    return NormalizedClassifier(body, [0.4], [0.3]).eval(), (1, 8, 8)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.0, 0.01, 0.05]))
def test_the_pytorch_source_bounds_the_same_function_as_the_artifact(seed, eps):
    model, shape = chain(seed)
    live = Engine(from_module(model.double()))
    artifact = Engine(from_onnx(simplify(to_onnx(model.float(), shape, 13))))
    x = torch.rand(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        exact = model.double()(x)
        assert torch.allclose(live.output(x), exact, rtol=0, atol=1e-12)
        for method in ("ibp", "crown"):
            lo, hi = live.bounds(Ball(x, eps), method)[live.graph.output]
            assert torch.all(lo <= exact) and torch.all(exact <= hi)
            lo_a, hi_a = artifact.bounds(Ball(x, eps), method)[artifact.graph.output]
            # the artifact folds the batch norm into the convolution: the same function up to float32 weights
            drift = 1e-5 * (1 + exact.abs().max())
            assert torch.all((lo - lo_a).abs() <= drift + 0.05 * (hi_a - lo_a))


def test_a_model_that_is_not_a_chain_is_refused_in_one_line():
    with pytest.raises(BoundError, match="cannot bound layer .*Sigmoid.*takes chains of"):
        from_module(nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Sigmoid()))


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(["ibp", "crown-ibp"]), eps=st.sampled_from([0.005, 0.05]))
def test_the_robust_term_is_never_below_the_clean_loss_and_certified_margins_hold(seed, name, eps):
    model, shape = chain(seed)
    model = model.double()
    x = torch.rand(6, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 3, (6,), generator=torch.Generator().manual_seed(seed))
    engine = Engine(from_module(model))
    ball = Ball(x, eps)
    with torch.no_grad():
        table = engine.bounds(ball, "ibp")
        for margins in (ibp_margins(engine, ball, y, table), crown_margins(engine, ball, y, table)):
            worst = torch.nn.functional.cross_entropy(worst_logits(margins, y), y, reduction="none")
            clean = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            assert torch.all(worst >= clean)
            logits = model(x)
            actual = logits.gather(1, y.unsqueeze(1)) - logits
            assert torch.all(margins <= actual + 1e-12)
    loss = build_training_loss(name, eps=eps, schedule="constant")
    out = loss(model, x, y, StepState(0, 0, 0.0, 1))
    assert out.loss.item() >= torch.nn.functional.cross_entropy(model(x), y).item() - 1e-12


@pytest.mark.parametrize("name", ["ibp", "crown-ibp"])
def test_a_few_steps_lower_the_certified_loss(name):
    model, shape = chain(0)
    model.train()
    x = torch.rand(32, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(1))
    loss = build_training_loss(name, eps=0.02, schedule="constant", weight=1.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    state = StepState(0, 0, 1.0, 1)
    first = loss(model, x, y, state).loss.item()
    for _ in range(15):
        optimiser.zero_grad()
        loss(model, x, y, state).loss.backward()
        optimiser.step()
    assert loss(model, x, y, state).loss.item() < first


def test_the_eps_ramp_starts_small_and_reaches_eps_halfway():
    loss = build_training_loss("ibp", eps=0.01, epochs=4)
    assert loss.schedule.eps_at(0.0) == pytest.approx(0.001) and loss.schedule.eps_at(2.0) == pytest.approx(0.01)
    assert loss.schedule.eps_at(1.0) < 0.01


def test_ibp_trains_from_the_loop_by_name_and_certifies_more_than_natural_training():
    assert {"ibp", "crown-ibp"} <= set(LOSSES.names())
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    x, y = test.images[:200].double(), test.labels[:200]
    results = {}
    for name in ("natural", "ibp"):
        model = build_model("scnn2:8-16", train.input_shape, train.num_classes, mean=[0.5], std=[0.25])
        config = TrainConfig(epochs=3, batch_size=64, lr=0.05, seed=0)
        settings = {"eps": 0.05, "epochs": 3, "weight": 1.0} if name == "ibp" else {}
        Trainer(model, train, config, LoopSetup(loss=build_training_loss(name, **settings)), progress=False,
                device="cpu").fit()
        engine = Engine(from_module(model.eval().double()))
        with torch.no_grad():
            margins = ibp_margins(engine, Ball(x, 0.05), y, engine.bounds(Ball(x, 0.05), "ibp"))
        results[name] = float((margins.scatter(1, y.unsqueeze(1), float("inf")).min(1).values > 0).double().mean())
    assert results["ibp"] > results["natural"]
