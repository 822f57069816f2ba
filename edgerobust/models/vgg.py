"""VGG with batch norm for CIFAR (Simonyan & Zisserman 2015), in the layout of kuangliu's pytorch-cifar."""
from __future__ import annotations

from torch import nn

from ..errors import EdgeRobustError
from .registry import MODELS

POOL = "M"
CONFIGS = {
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
}


def vgg(input_shape, num_classes, config) -> nn.Sequential:
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for item in config:
        if item == POOL:
            # Skip halving a side that is already 1 pixel, so 8x8 and 28x28 inputs survive five pools.
            kernel = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
            if kernel != (1, 1):
                layers.append(nn.MaxPool2d(kernel))
            h, w = h // kernel[0], w // kernel[1]
        else:
            layers += [nn.Conv2d(c, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
            c = item
    # At 32x32 the features are already 1x1 and this pool is a no-op, as kuangliu's AvgPool2d(1).
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


@MODELS.register("vgg11", "VGG-11 with BN for CIFAR (9.23M params)")
def vgg11(input_shape, num_classes):
    return vgg(input_shape, num_classes, CONFIGS["vgg11"])


@MODELS.register("vgg16", "VGG-16 with BN for CIFAR (14.73M params)")
def vgg16(input_shape, num_classes):
    return vgg(input_shape, num_classes, CONFIGS["vgg16"])


@MODELS.register("vgg-small", "small VGG with BN for fast runs: 3x3 conv + max-pool per width (default 32-64-128)")
def vgg_small(input_shape, num_classes, *widths: int):
    widths = widths or (32, 64, 128)
    if min(widths) <= 0:
        raise EdgeRobustError(f"vgg-small:{'-'.join(map(str, widths))}: widths must be positive, e.g. vgg-small:32-64")
    config = tuple(x for width in widths for x in (width, POOL))
    return vgg(input_shape, num_classes, config)
