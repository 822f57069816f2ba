"""Activation swapping keeps the other weights; the activation is part of the run's identity."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgerobust.config import TrainConfig
from edgerobust.errors import EdgeRobustError
from edgerobust.models import build_model
from edgerobust.models.activations import ACTIVATIONS, swap_activations
from edgerobust.models.kaf import KAF
from edgerobust.models.lipschitz import lipschitz_bound
from edgerobust.run import RunDir
from edgerobust.training.api import TrainSetup, train_model


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS.names()) - {"relu"}))
@pytest.mark.parametrize("spec,shape", [("scnn2:4-8", (1, 8, 8)), ("resnet20", (3, 8, 8))])
def test_swap_keeps_every_other_weight(name, spec, shape):
    torch.manual_seed(0)
    model = build_model(spec, shape, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swap_activations(model, name, shape)
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model(torch.rand(2, *shape)).shape == (2, 10)
    if name == "kaf":  # one α per channel of each swapped layer
        kafs = [m for m in model.modules() if isinstance(m, KAF)]
        assert kafs and all(m.alpha.shape[1] == 20 for m in kafs)
        first = model.net[1] if spec.startswith("scnn2") else model.net.relu
        assert first.alpha.shape[0] == (4 if spec.startswith("scnn2") else 16)


def test_unknown_activation_is_one_clear_error():
    with pytest.raises(EdgeRobustError, match="unknown activation 'bogus'"):
        build_model("scnn2:4-8", (1, 8, 8), 10, activation="bogus")


def test_a_kaf_run_reloads_and_its_lipschitz_bound_uses_the_kaf_slopes(tmp_path):
    run = train_model(tmp_path / "r", "scnn2:4-8", "digits", TrainConfig(epochs=1, augment=False),
                      TrainSetup(activation="kaf", device="cpu"), progress=False)
    assert run.manifest["model"]["activation"] == {"name": "kaf", "options": {}}
    model = RunDir.open(run.path).load_model()
    kafs = [m for m in model.modules() if isinstance(m, KAF)]
    assert len(kafs) == 3
    layers = {layer.name: layer for layer in lipschitz_bound(model, (1, 8, 8)).layers}
    assert layers["net.1"].kind == "KAF" and layers["net.1"].norm == pytest.approx(kafs[0].lipschitz_constant())
