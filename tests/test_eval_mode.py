"""`eval_mode`: the model's mode is restored on leaving the block, also when the block raises."""
import pytest
from torch import nn

from edgerobust.models import eval_mode


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_mode_also_after_an_error(training):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train(training)
    with eval_mode(model):
        assert not model.training and not model[1].training
    assert model.training is training and model[1].training is training
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("inside")
    assert model.training is training and model[1].training is training
