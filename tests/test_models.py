"""Every registered model builds for digits-, MNIST- and CIFAR-sized inputs, trains, and keeps its size."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgerobust.errors import EdgeRobustError, ShapeError
from edgerobust.models import MODELS, build_model, count_flops, count_parameters

# Barmpas teachers have four k4/s2 convs, which need at least 16x16 inputs.
NEEDS_16PX = {"svhn-teacher", "cifar-teacher"}

# Parameter counts at (3, 32, 32) and 10 classes.
PARAMS = {
    # LeNet-5 with conv1 padded by 2: the classic 61,706 at 1x28x28, plus RGB conv1 and a 6x6 (not 5x5) map.
    "lenet5": 83_126,
    # He et al. report 0.27M for option-A (zero-pad) shortcuts: 269,722. Ours use 1x1 conv + BN projections
    # at the two downsampling blocks: + (16*32 + 2*32) + (32*64 + 2*64) = 2,752.
    "resnet20": 272_474,
    # kuangliu/pytorch-cifar ResNet34: 21,282,122.
    "resnet34": 21_282_122,
    # Paper blocks with CIFAR strides; torchvision mobilenet_v2(num_classes=10) has the same 2,236,682
    # (kuangliu's version adds projection shortcuts and reports 2.30M).
    "mobilenetv2": 2_236_682,
    # kuangliu/pytorch-cifar VGG('VGG11') / VGG('VGG16'): 9,231,114 / 14,728,266.
    "vgg11": 9_231_114,
    "vgg16": 14_728_266,
    "vgg-small": 94_986,
    # kuangliu's PreActResNet18 has 11,171,146; ours adds the paper's final BN (+2*512).
    "preactresnet18": 11_172_170,
    "scnn2-mp": 25_578,
}

ALL = MODELS.names()
SMALL = [name for name in ALL if name not in NEEDS_16PX]


def _check_forward_backward(model: nn.Module, shape, batch: int, classes: int) -> None:
    x = torch.rand(batch, *shape, requires_grad=True)
    out = model(x)
    assert out.shape == (batch, classes)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SMALL)
def test_digits_shape_trains(name):
    # Batch 2 in train mode: batch norm on a 1x1 final map needs more than one value per channel.
    model = build_model(name, (1, 8, 8), 7).train()
    _check_forward_backward(model, (1, 8, 8), 2, 7)


@pytest.mark.parametrize("name", sorted(NEEDS_16PX))
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_too_small_input_is_one_clear_error(name):
    with pytest.raises(ShapeError, match=r"cannot take inputs of shape \(1, 8, 8\)"):
        build_model(name, (1, 8, 8), 10)


@pytest.mark.parametrize("name", ALL)
def test_cifar_shape(name):
    model = build_model(name, (3, 32, 32), 10).eval()
    _check_forward_backward(model, (3, 32, 32), 1, 10)
    assert count_flops(model, (3, 32, 32)) > 0
    if name in PARAMS:
        assert count_parameters(model) == PARAMS[name]
    # In-place activations break autograd reuse and some pruning/export tools.
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize("name", ALL)
def test_mnist_shape_any_class_count(name):
    model = build_model(name, (1, 28, 28), 3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 28, 28)).shape == (1, 3)


def test_pinned_models_are_registered():
    assert set(PARAMS) <= set(ALL)


def test_non_square_input():
    for name in ("lenet5", "vgg11", "resnet20", "scnn2-mp"):
        build_model(name, (3, 16, 8), 4)  # builds only if the dummy pass gives (1, 4)


def test_depthwise_convs_are_grouped_conv2d():
    model = build_model("mobilenetv2", (3, 32, 32), 10)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_width_arguments():
    half = build_model("mobilenetv2:50", (1, 8, 8), 10)
    assert count_parameters(half) < count_parameters(build_model("mobilenetv2", (1, 8, 8), 10))
    tiny = build_model("vgg-small:8-16", (1, 8, 8), 10)
    assert [m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)] == [8, 16]
    assert count_parameters(build_model("scnn2-mp:4-8", (1, 8, 8), 10)) == (9 * 4 + 4) + (36 * 8 + 8) + (8 * 4 + 1) * 10


@pytest.mark.parametrize("spec", ["resnet20:3", "lenet5:1-2", "preactresnet18:4", "vgg16:1", "mobilenetv2:0",
                                  "mobilenetv2:50-2", "vgg-small:0", "vgg-small:16-x", "scnn2-mp:0-8",
                                  "scnn2-mp:1-2-3"])
def test_bad_arguments(spec):
    with pytest.raises(EdgeRobustError):
        build_model(spec, (3, 32, 32), 10)
