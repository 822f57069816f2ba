"""The user's own data (issue 26): `imagefolder` (class folders, Pillow, streamed by loader workers) and `npz`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from user_data import CLASSES, image_folder

from edgerobust.data import FileImages, iterate_batches, load_dataset
from edgerobust.errors import DataError


def test_stratified_split_is_seeded_disjoint_and_names_the_classes(tmp_path):
    root = image_folder(tmp_path / "f", per_class=10)
    train = load_dataset("imagefolder", "train", root)
    test = load_dataset("imagefolder", "test", root)
    assert train.info["classes"] == list(CLASSES) and train.num_classes == 3
    assert train.input_shape == (3, 12, 12) and len(train) + len(test) == 30
    assert torch.bincount(test.labels).tolist() == [2, 2, 2]  # stratified: 20% of each class
    again = load_dataset("imagefolder", "test", root)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    other = load_dataset("imagefolder", "test", root, split_seed=1)
    assert not torch.equal(other.images, test.images)
    both = torch.cat([train.images, test.images]).flatten(1)
    assert len(torch.unique(both, dim=0)) == 30  # every image once: the splits are disjoint and cover the folder
    assert train.describe()["classes"] == list(CLASSES)


def test_pixels_are_the_files_bytes_over_255(tmp_path):
    root = image_folder(tmp_path / "f", per_class=4, formats=("png",))
    data = load_dataset("imagefolder", "train", root, test_fraction=0.5)
    path = tmp_path / "f" / CLASSES[int(data.labels[0])]
    files = sorted(path.glob("*.png"))
    decoded = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) / 255 for f in files]
    assert any(torch.equal(data.images[0], d.float()) for d in decoded)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_byte_value_becomes_its_float32_quotient_by_255(tmp_path, workers):
    for name in ("a", "b"):  # two classes, each image holding all 256 grey levels once
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(tmp_path / "f" / name / f"{i}.png")
    data = load_dataset("imagefolder", "train", tmp_path / "f", shape=[1, 16, 16], test_fraction=0.5, stream=True,
                        workers=workers)
    batches = [x for x, _ in iterate_batches(data, 1)]  # two batches: with workers, both decoded by the pool
    expected = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).float() / 255  # correctly rounded quotients
    assert len(batches) == 2 and all(x.dtype == torch.float32 and torch.equal(x[0], expected) for x in batches)


def test_given_train_and_test_folders_are_kept(tmp_path):
    image_folder(tmp_path / "f" / "train", per_class=4)
    image_folder(tmp_path / "f" / "test", per_class=2, classes=CLASSES[:2], seed=1)
    train = load_dataset("imagefolder", "train", tmp_path / "f")
    test = load_dataset("imagefolder", "test", tmp_path / "f")
    assert (len(train), len(test)) == (12, 4) and test.num_classes == 3
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1] and test.info["layout"] == "train/ and test/ folders"


def test_streamed_batches_equal_in_memory_ones_with_and_without_workers(tmp_path):
    root = image_folder(tmp_path / "f", per_class=12, size=lambda i: (10 + i % 4, 9 + i % 3))
    shape = [3, 8, 8]
    memory = load_dataset("imagefolder", "train", root, shape=shape, stream=False)
    streamed = load_dataset("imagefolder", "train", root, shape=shape, stream=True, workers=2)
    assert isinstance(streamed.images, FileImages) and isinstance(memory.images, torch.Tensor)
    assert streamed.mean == memory.mean and streamed.std == memory.std
    for workers in (0, 2):
        streamed.images.workers = workers
        a = list(iterate_batches(memory, 5, shuffle=True, generator=torch.Generator().manual_seed(3)))
        b = list(iterate_batches(streamed, 5, shuffle=True, generator=torch.Generator().manual_seed(3)))
        assert len(a) == len(b) == 6
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(streamed.subset(4).images, memory.images[:4])


def test_auto_streams_beyond_the_memory_limit(tmp_path):
    root = image_folder(tmp_path / "f", per_class=4)
    assert isinstance(load_dataset("imagefolder", "train", root, max_memory=100).images, FileImages)
    assert isinstance(load_dataset("imagefolder", "train", root).images, torch.Tensor)


def test_centre_crop_keeps_the_middle_and_resize_the_whole(tmp_path):
    stripes = np.zeros((20, 80, 3), np.uint8)
    stripes[:, :20, 0] = 255
    stripes[:, 20:60, 1] = 255
    stripes[:, 60:, 2] = 255
    for name in CLASSES[:2]:
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(stripes).save(tmp_path / "f" / name / f"{i}.png")
    crop = load_dataset("imagefolder", "train", tmp_path / "f", shape=[3, 10, 10], fit="crop", test_fraction=0.5)
    assert torch.equal(crop.images[0][1], torch.ones(10, 10)) and crop.images[0][[0, 2]].abs().sum() == 0
    whole = load_dataset("imagefolder", "train", tmp_path / "f", shape=[3, 10, 10], test_fraction=0.5)
    assert whole.images[0][0, :, 0].min() > 0.9 and whole.images[0][2, :, -1].min() > 0.9


def test_greyscale_folder_has_one_channel(tmp_path):
    data = load_dataset("imagefolder", "train", image_folder(tmp_path / "f", per_class=4, grey=True))
    assert data.input_shape == (1, 12, 12)


def corrupt(root, name="001.png", data=b"not an image at all"):
    (root / CLASSES[0] / name).write_bytes(data)
    return root / CLASSES[0] / name


@pytest.mark.parametrize("make,expected", [
    (lambda t: corrupt(image_folder(t, 4)), "001.png: cannot read this image"),
    (lambda t: (image_folder(t, 4), (t / "empty").mkdir()), "empty holds no PNG, JPEG or BMP image"),
    (lambda t: image_folder(t, 4, size=lambda i: (12, 12 + i)), "declare the input shape"),
    (lambda t: image_folder(t, 4, classes=("one",)), "at least 2"),
    (lambda t: image_folder(t, 1), "needs at least 2 per class"),
    (lambda t: t.mkdir(), "has 0 class folder(s)"),
], ids=["corrupt", "empty-class", "mixed-sizes", "one-class", "one-image-per-class", "empty-root"])
def test_bad_folders_are_one_line_naming_the_file(tmp_path, make, expected):
    make(tmp_path / "f")
    with pytest.raises(DataError, match=None) as info:
        load_dataset("imagefolder", "train", tmp_path / "f")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_truncated_image_found_by_a_worker_is_one_line_naming_it(tmp_path):
    root = image_folder(tmp_path / "f", per_class=6, formats=("png",))
    good = (root / CLASSES[1] / "002.png").read_bytes()
    (root / CLASSES[1] / "002.png").write_bytes(good[: len(good) // 2])  # header intact, pixels cut
    options = dict(shape=[3, 12, 12], stream=True, workers=2, test_fraction=0.5)
    data = [load_dataset("imagefolder", split, root, **options) for split in ("train", "test")]
    with pytest.raises(DataError) as info:
        for split in data:
            list(iterate_batches(split, 2))
    assert "002.png: cannot decode" in str(info.value) and "Traceback" not in str(info.value)


def test_npz_channels_last_uint8_equals_channels_first_float(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    np.savez(tmp_path / "hwc.npz", x=x, y=y, classes=np.array(["a", "b", "c", "d"]))
    np.savez(tmp_path / "chw.npz", x=x.transpose(0, 3, 1, 2).astype(np.float64) / 255, y=y)
    a = load_dataset("npz", "train", tmp_path / "hwc.npz")
    b = load_dataset("npz", "train", tmp_path / "chw.npz")
    assert a.input_shape == (3, 8, 8) and a.num_classes == 4 and a.info["classes"] == ["a", "b", "c", "d"]
    assert torch.equal(a.labels, b.labels) and torch.allclose(a.images, b.images, atol=0, rtol=2**-23)
    test = load_dataset("npz", "test", tmp_path / "hwc.npz")
    assert len(test) == 8 and torch.bincount(test.labels).tolist() == [2, 2, 2, 2]


def test_npz_train_and_test_files(tmp_path):
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "train.npz", x=np.zeros((6, 1, 4, 4), np.uint8), y=[0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d" / "test.npz", x=np.full((2, 1, 4, 4), 255, np.uint8), y=[1, 0])
    test = load_dataset("npz", "test", tmp_path / "d")
    assert test.images.min() == 1 and test.num_classes == 3 and test.labels.tolist() == [1, 0]


@pytest.mark.parametrize("arrays,options,expected", [
    ({"x": np.zeros((4, 3, 4, 4), np.uint8), "y": [0, 1, 5, 0]}, {"num_classes": 3}, "label 5 is out of range"),
    ({"x": np.zeros((4, 3, 4, 4), np.uint8), "y": [0, 1, -1, 0]}, {}, "label -1 is out of range"),
    ({"x": np.full((4, 3, 4, 4), 2.0), "y": [0, 1, 1, 0]}, {}, "outside [0, 1]"),
    ({"x": np.zeros((4, 3, 4, 4), np.int32), "y": [0, 1, 1, 0]}, {}, "use uint8"),
    ({"x": np.zeros((4, 3, 4), np.uint8), "y": [0, 1, 1, 0]}, {}, "expected N×C×H×W"),
    ({"x": np.zeros((4, 3, 4, 4), np.uint8), "y": [0, 1, 1]}, {}, "y has shape (3,)"),
    ({"x": np.zeros((4, 3, 4, 4), np.uint8)}, {}, "lacks array(s) y"),
    ({"x": np.array([None, 1], dtype=object), "y": [0, 1]}, {}, "not a readable .npz"),
], ids=["label-too-big", "label-negative", "float-above-1", "int32-pixels", "3d-x", "y-length", "no-y", "pickle"])
def test_bad_npz_is_one_line_naming_the_file(tmp_path, arrays, options, expected):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset("npz", "train", tmp_path / "bad.npz", **options)
    assert expected in str(info.value) and "bad.npz" in str(info.value)


def test_an_unreadable_folder_is_one_line(tmp_path, monkeypatch):
    """Root reads any directory whatever its mode, so the refusal the OS would give is simulated."""
    import os

    root = image_folder(tmp_path / "f", per_class=4)
    real = os.scandir

    def refuse(path):
        if str(path) == str(root):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", "train", root)
    assert str(info.value) == f"imagefolder: cannot read {root} (Permission denied)"
