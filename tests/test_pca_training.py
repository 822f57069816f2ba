"""Song's PCA first layer under the training losses of issue 24: the smoothing losses (Gaussian augmentation,
consistency, generalized consistency, MACER) train through it, and the certified losses (IBP, CROWN-IBP) bound it
through the PyTorch graph source as the export writes it (Flatten, Sub, MatMul, MatMul, Add, Reshape)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgerobust.bounds import Ball, BoundError, Engine, from_module
from edgerobust.config import TrainConfig
from edgerobust.models.normalize import NormalizedClassifier
from edgerobust.models.pca import PCAProjection, fit_pca
from edgerobust.training import LOSSES
from edgerobust.training.api import TrainSetup, train_model

PCA = {"sigma": 0.25, "k": 5}


def pca_chain(seed: int) -> tuple[NormalizedClassifier, tuple[int, int, int]]:
    """A conv chain behind a PCA layer fitted on random images of low rank (so some components are dropped)."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 6, 6)
    images = (torch.rand(64, 3, generator=g) @ torch.rand(3, 36, generator=g) / 3).reshape(64, *shape)
    layer = fit_pca(images, 0.05, 5, dtype=torch.float64)
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(108, 8), nn.ReLU(),
                         nn.Linear(8, 3))
    return NormalizedClassifier(body, [0.4], [0.3], layer).double().eval(), shape


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.01, 0.05]))
def test_the_pytorch_source_bounds_the_pca_layer(seed, eps):
    """The graph's PCA stage is the layer's function (one product by P = W·Wᵀ where the layer multiplies by W then
    Wᵀ: equal up to float64 rounding, |Δ| ≤ 4·(D + k)·u64·|x − μ|·|W|·|Wᵀ|), and no sampled point of the ball
    escapes the IBP or CROWN bounds of the whole graph."""
    model, shape = pca_chain(seed)
    w = model.pca.basis
    assert w.shape[1] < 36
    engine = Engine(from_module(model, shape))
    alone = Engine(from_module(NormalizedClassifier(nn.Identity(), [0.0], [1.0], model.pca), shape))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, *shape, dtype=torch.float64, generator=g)
    with torch.no_grad():
        centred = (x.flatten(1) - model.pca.mean).abs()
        slack = 4 * (w.shape[0] + w.shape[1]) * 2.0 ** -53 * (centred @ w.abs() @ w.abs().T)
        assert torch.all((alone.output(x) - model.pca(x)).flatten(1).abs() <= slack)
        inside = x[None] + eps * (2 * torch.rand(32, *x.shape, dtype=torch.float64, generator=g) - 1)
        outputs = engine.output(inside.reshape(-1, *shape)).reshape(32, 4, -1)
        for method in ("ibp", "crown"):
            lo, hi = engine.bounds(Ball(x, eps), method)[engine.graph.output]
            assert torch.all(lo <= outputs) and torch.all(outputs <= hi)


def test_the_projection_is_bounded_as_one_product():
    """An interval through W then Wᵀ would widen by |W|·|Wᵀ|; through P = W·Wᵀ it widens by |P| exactly (IBP of a
    single affine map is exact: the radius times |P|)."""
    model, shape = pca_chain(1)
    alone = Engine(from_module(NormalizedClassifier(nn.Identity(), [0.0], [1.0], model.pca), shape))
    x = 0.1 + 0.8 * torch.rand(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))  # unclipped
    w = model.pca.basis
    lo, hi = alone.bounds(Ball(x, 0.01), "ibp")[alone.graph.output]
    width = (hi - lo).flatten(1)
    through_p = 0.02 * (w @ w.T).abs().sum(0)
    assert torch.allclose(width, through_p.expand_as(width), rtol=1e-9, atol=0)
    assert torch.all(width < 0.02 * (w.abs() @ w.abs().T).sum(0))


def test_the_pca_layer_needs_the_input_shape_and_the_first_place():
    model, _ = pca_chain(0)
    with pytest.raises(BoundError, match="PCA layer is bounded as the model's first layer"):
        from_module(model)
    with pytest.raises(BoundError, match="PCA layer is bounded as the model's first layer"):
        from_module(nn.Sequential(nn.Identity(), nn.Flatten(), model.pca), (1, 6, 6))


def _train(tmp_path, name, loss, spec="scnn2:4-8", epochs=1):
    torch.manual_seed(0)
    return train_model(tmp_path / name, spec, "digits", TrainConfig(epochs=epochs, batch_size=64, lr=0.05,
                                                                    augment=False),
                       TrainSetup(loss=loss, model_options={"pca": PCA}), progress=False)


@pytest.mark.parametrize("name", ["ibp", "crown-ibp"])
def test_certified_losses_train_with_the_pca_layer(name, tmp_path):
    run = _train(tmp_path, name, LOSSES.get(name)(eps=0.01), "mlp:32", epochs=2)
    assert run.manifest["training"]["loss"]["name"] == name
    assert run.manifest["model"]["pca"]["components"] < 64
    assert isinstance(run.load_model().pca, PCAProjection)
    assert run.manifest["metrics"]["test_accuracy"] > 0.5  # learns, as without the layer (0.90 there)


@pytest.mark.parametrize("name,options", [("gaussian", {"m": 2}), ("consistency", {"m": 2}),
                                          ("gen-consistency", {"m": 2}), ("macer", {"m": 4})])
def test_smoothing_losses_train_with_the_pca_layer(name, options, tmp_path):
    run = _train(tmp_path, name, LOSSES.get(name)(sigma=0.25, **options), "mlp:32", epochs=2)
    assert run.manifest["training"]["loss"]["name"] == name and run.manifest["model"]["pca"]["sigma"] == 0.25
    assert isinstance(run.load_model().pca, PCAProjection)
    assert run.manifest["metrics"]["test_accuracy"] > 0.5  # as without the layer (test_smoothing_losses.py)
