"""Lipschitz bounds: operator norms against explicit matrices, the global bound against Jacobians."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgerobust.errors import EdgeRobustError
from edgerobust.models import build_model
from edgerobust.models.lipschitz import ACTIVATION_SLOPES, batchnorm_norm, conv_norm, conv_upper_bound, lipschitz_bound


def unfolded(conv: nn.Conv2d, shape) -> torch.Tensor:
    """The conv (no bias) as an explicit matrix: its columns are the images of the basis vectors."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    with torch.no_grad():
        out = nn.functional.conv2d(basis, conv.weight.double(), None, conv.stride, conv.padding, conv.dilation,
                                   conv.groups)
    return out.reshape(n, -1).T


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,groups,size", [
    (1, 2, 3, 1, 1, 1, 1, 5), (2, 3, 4, 2, 1, 1, 1, 6), (3, 4, 3, 2, 0, 1, 1, 7), (4, 4, 3, 1, 1, 1, 2, 4),
    (2, 2, 2, 1, 2, 2, 1, 4), (2, 4, 1, 2, 0, 1, 2, 5)])
def test_conv_norm_is_largest_singular_value_of_unfolded_matrix(cin, cout, k, stride, pad, dil, groups, size):
    torch.manual_seed(cin * 100 + k * 10 + stride)
    conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups)
    shape = (cin, size, size + 1)
    exact = float(torch.linalg.matrix_norm(unfolded(conv, shape), ord=2))
    assert conv_norm(conv, shape, iterations=3000, tol=1e-13) == pytest.approx(exact, rel=1e-6)
    # the reshaped kernel's norm is another number: the operator must be used
    upper = conv_upper_bound(conv, shape)
    assert upper >= exact * (1 - 1e-12)


def test_batchnorm_eval_norm():
    bn = nn.BatchNorm2d(3)
    bn.weight.data = torch.tensor([0.5, -2.0, 1.0])
    bn.running_var = torch.tensor([1.0, 4.0, 0.25])
    assert batchnorm_norm(bn) == pytest.approx(max(0.5 / math.sqrt(1 + bn.eps), 2 / math.sqrt(4 + bn.eps),
                                                   1 / math.sqrt(0.25 + bn.eps)), rel=1e-12)


def test_activation_slopes_are_the_largest_derivative():
    x = torch.linspace(-20, 20, 400001, dtype=torch.float64, requires_grad=True)
    for kind in (nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Sigmoid, nn.Tanh, nn.ReLU):
        module = kind()
        grad = torch.autograd.grad(module(x).sum(), x)[0]
        slope = ACTIVATION_SLOPES[kind](module)
        assert float(grad.abs().max()) <= slope * (1 + 1e-9), kind
        assert float(grad.abs().max()) >= slope * (1 - 1e-6), kind


def randomise_batchnorm(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.randn(m.num_features, generator=g).to(m.running_mean)
            m.running_var = (torch.rand(m.num_features, generator=g) + 0.2).to(m.running_var)
            m.weight.data = torch.randn(m.num_features, generator=g).to(m.weight)


def jacobian_norm(model, x) -> float:
    jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0)).squeeze(0), x)
    return float(torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1), ord=2))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), spec=st.sampled_from(["scnn2:4-8", "lenet5", "mlp:16", "vgg-small:4-8"]))
def test_global_bound_is_never_below_the_jacobian_norm(seed, spec):
    shape = (3, 8, 8) if spec == "resnet20" else (1, 12, 12)
    torch.manual_seed(seed)
    model = build_model(spec, shape, 10, [0.5] * shape[0], [0.3] * shape[0]).double().eval()
    randomise_batchnorm(model, seed)
    result = lipschitz_bound(model, shape)
    assert result.upper >= result.bound * (1 - 1e-9)
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        x = torch.rand(*shape, generator=g, dtype=torch.float64)
        assert jacobian_norm(model, x) <= result.bound * (1 + 1e-9)


def preact_net(input_shape, num_classes):
    from edgerobust.models.preact_resnet import PreActBlock

    return nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), PreActBlock(4, 4), PreActBlock(4, 6, 2), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, num_classes))


@pytest.mark.parametrize("spec", ["resnet20", "preact"])
def test_residual_networks_bound_their_jacobian(spec):
    from edgerobust.models import NormalizedClassifier

    torch.manual_seed(1)
    model = (build_model(spec, (3, 8, 8), 10) if spec == "resnet20" else
             NormalizedClassifier(preact_net((3, 8, 8), 10), [0.5] * 3, [0.3] * 3)).double().eval()
    randomise_batchnorm(model, 1)
    result = lipschitz_bound(model, (3, 8, 8), iterations=30)
    names = {layer.name for layer in result.layers}
    wanted = ({"net.conv1", "net.layers.1.0.conv2", "net.layers.1.0.shortcut.0"} if spec == "resnet20" else
              {"net.1.conv1", "net.2.shortcut", "net.2.bn1"})
    assert wanted <= names
    x = torch.rand(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert jacobian_norm(model, x) <= result.bound


def test_unknown_layer_is_one_clear_error():
    class Odd(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    with pytest.raises(EdgeRobustError, match="no rule for layer"):
        lipschitz_bound(nn.Sequential(Odd(), nn.Linear(4, 2)), (1, 2, 2))


def _digits_subset(n=256):
    from edgerobust.data import ArrayDataset, load_dataset

    data = load_dataset("digits", "train")
    return ArrayDataset(data.images[:n], data.labels[:n], data.num_classes, "digits", "train")


def _train(**options):
    from edgerobust.config import TrainConfig
    from edgerobust.training.loop import Trainer

    torch.manual_seed(0)
    data = _digits_subset()
    model = build_model("scnn2:8-16", data.input_shape, 10)
    config = TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False, **options)
    Trainer(model, data, config, progress=False, device="cpu").fit()
    return model.eval(), data.input_shape


def test_spectral_normalisation_caps_every_operator_norm():
    model, shape = _train(spectral_norm=1.0)
    result = lipschitz_bound(model, shape, iterations=500, tol=1e-9)
    norms = [layer.norm for layer in result.layers if layer.kind in ("Conv2d", "Linear")]
    # the cap holds for the persistent vector's estimate; the converged norm may exceed it only by what one
    # power step per training step leaves unconverged
    assert max(norms) <= 1.05
    plain, _ = _train()
    assert max(layer.norm for layer in lipschitz_bound(plain, shape).layers if layer.kind == "Conv2d") > 1.05


def test_log_norm_penalty_lowers_the_global_bound():
    penalised, shape = _train(lipschitz_penalty=0.05)
    plain, _ = _train()
    assert lipschitz_bound(penalised, shape).bound < lipschitz_bound(plain, shape).bound
