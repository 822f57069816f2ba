"""Augmentations (off in eval, shape- and range-preserving) and the unlabelled pool."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.data import NO_AUGMENT, Augment, iterate_batches, load_dataset, to_shape, unlabelled_pool


@settings(max_examples=20, deadline=None)
@given(padding=st.integers(0, 3), flip=st.booleans(), degrees=st.floats(0, 30), seed=st.integers(0, 1000))
def test_augment_keeps_shape_and_range(padding, flip, degrees, seed):
    x = torch.rand(5, 3, 8, 8)
    out = Augment(padding, flip, degrees)(x, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_crop_is_a_shift_of_the_padded_image():
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    out = Augment(crop_padding=1)(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    windows = [padded[..., i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
    assert any(torch.equal(out, w) for w in windows)


def test_no_augmentation_in_eval_batches():
    data = load_dataset("digits", "test")
    x, y = next(iterate_batches(data, 32, augment=NO_AUGMENT))
    assert torch.equal(x, data.images[:32]) and torch.equal(y, data.labels[:32])


def test_unlabelled_pool_converts_shape_and_is_seeded():
    pool = unlabelled_pool(["digits", "synthetic"], (3, 16, 16), size=100, seed=1)
    again = unlabelled_pool(["digits", "synthetic"], (3, 16, 16), size=100, seed=1)
    assert pool.shape == (100, 3, 16, 16) and torch.equal(pool, again)
    assert to_shape(torch.rand(2, 3, 32, 32), (1, 8, 8)).shape == (2, 1, 8, 8)
