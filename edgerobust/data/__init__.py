"""Datasets: a registry of loaders returning NCHW float32 pixels in [0,1]."""
from . import cifar, digits, imagefolder, mnist, npz, svhn, synthetic  # noqa: F401  (each import registers its datasets)
from .augment import NO_AUGMENT, Augment, default_augment
from .base import ArrayDataset
from .files import FileImages
from .loader import iterate_batches, num_batches
from .pool import to_shape, unlabelled_pool
from .registry import DATASETS, load_dataset

__all__ = ["ArrayDataset", "Augment", "DATASETS", "FileImages", "NO_AUGMENT", "default_augment", "iterate_batches",
           "load_dataset", "num_batches", "to_shape", "unlabelled_pool"]
