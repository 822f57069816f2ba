"""On-disk loaders read tiny files written in each dataset's real format, pixel for pixel."""
from __future__ import annotations

import gzip
import io
import pickle
import struct

import numpy as np
import pytest
import torch

from edgerobust.data import DATASETS, load_dataset
from edgerobust.errors import DataError

RNG = np.random.default_rng(0)


# --- MNIST idx -------------------------------------------------------------------------------------------

def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def _write(path, data: bytes, gz: bool):
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sub", ["", "MNIST/raw"])
def test_mnist_idx(tmp_path, gz, sub):
    images = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 0, 9, 1, 7], np.uint8)
    _write(tmp_path / sub / "t10k-images-idx3-ubyte", _idx(images), gz)
    _write(tmp_path / sub / "t10k-labels-idx1-ubyte", _idx(labels), gz)
    ds = load_dataset("mnist", "test", tmp_path)
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images).float() / 255)
    assert ds.labels.tolist() == [3, 0, 9, 1, 7] and ds.labels.dtype == torch.int64
    assert ds.num_classes == 10 and ds.mean == (0.1307,) and ds.std == (0.3081,)


def test_mnist_refuses_swapped_and_truncated_files(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    labels = np.zeros(2, np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(labels))  # a label file under the image name
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(labels))
    with pytest.raises(DataError, match="magic 00000801, expected 00000803"):
        load_dataset("mnist", "train", tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(images)[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", "train", tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(np.zeros((3, 28, 28), np.uint8)))
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        load_dataset("mnist", "train", tmp_path)


# --- CIFAR python pickles --------------------------------------------------------------------------------

class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 byte strings, like the cPickle that wrote the official batches."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_string(self, obj):
        obj = obj.encode("latin-1") if isinstance(obj, str) else obj
        header = pickle.SHORT_BINSTRING + bytes([len(obj)]) if len(obj) < 256 else pickle.BINSTRING + struct.pack(
            "<i", len(obj))
        self.write(header + obj)
        self.memoize(obj)

    dispatch[bytes] = save_string
    dispatch[str] = save_string


def _py2_pickle(obj, path):
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(obj)
    # numpy 1.x (as in the archive) names its array constructor numpy.core.multiarray.
    path.write_bytes(out.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


def _cifar_rows(n):
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8)


def test_cifar10_batches_and_channel_order(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train = []
    for i in range(1, 6):
        rows, labels = _cifar_rows(2), [i, 9 - i]
        _py2_pickle({b"batch_label": b"training batch", b"data": rows, b"labels": labels,
                     b"filenames": [b"a.png", b"b.png"]}, folder / f"data_batch_{i}")
        train.append((rows, labels))
    test_rows = np.zeros((1, 3072), np.uint8)
    test_rows[0, :1024] = 255  # pure red: the first 1024 bytes are the red plane
    test_rows[0, 1024 + 33] = 128  # green at row 1, column 1
    _py2_pickle({b"data": test_rows, b"labels": [4]}, folder / "test_batch")

    ds = load_dataset("cifar10", "train", tmp_path)
    rows = np.concatenate([r for r, _ in train])
    assert ds.images.shape == (10, 3, 32, 32)
    assert torch.equal(ds.images, torch.from_numpy(rows.reshape(-1, 3, 32, 32)).float() / 255)
    assert ds.labels.tolist() == [label for _, labels in train for label in labels]
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)

    test = load_dataset("cifar10", "test", folder)  # ROOT may also be the batches folder itself
    assert test.images[0, 0].eq(1).all() and test.images[0, 2].eq(0).all()
    assert test.images[0, 1, 1, 1] == pytest.approx(128 / 255) and test.images[0, 1].sum() == test.images[0, 1, 1, 1]
    assert test.labels.tolist() == [4]


def test_cifar100_fine_labels_and_python3_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows = _cifar_rows(3)
    with open(folder / "test", "wb") as f:  # a batch re-saved from Python 3 (protocol 2 stores bytes via _codecs)
        pickle.dump({b"data": rows, b"fine_labels": [99, 0, 42], b"coarse_labels": [1, 2, 3]}, f, protocol=2)
    ds = load_dataset("cifar100", "test", tmp_path)
    assert ds.num_classes == 100 and ds.labels.tolist() == [99, 0, 42]
    assert torch.equal(ds.images, torch.from_numpy(rows.reshape(3, 3, 32, 32)).float() / 255)


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_refuses_code_in_pickles(tmp_path, capsys):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(pickle.dumps({b"data": _Exploit()}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_dataset("cifar100", "train", tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_cifar_wrong_contents(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _py2_pickle({b"data": _cifar_rows(2), b"labels": [1, 2]}, folder / "train")  # CIFAR-10 keys
    with pytest.raises(DataError, match="fine_labels"):
        load_dataset("cifar100", "train", tmp_path)


# --- SVHN .mat -------------------------------------------------------------------------------------------

def test_svhn_mat(tmp_path):
    import scipy.io

    x = RNG.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)  # HWCN, as in the official files
    y = np.array([[10], [1], [5], [9]], np.uint8)
    scipy.io.savemat(tmp_path / "extra_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", "extra", tmp_path)
    assert ds.images.shape == (4, 3, 32, 32)
    assert ds.labels.tolist() == [0, 1, 5, 9]  # label 10 is digit 0
    assert ds.images[2, 1, 3, 7] == pytest.approx(x[3, 7, 1, 2] / 255)
    assert torch.equal(ds.images, torch.from_numpy(x.transpose(3, 2, 0, 1).copy()).float() / 255)
    assert ds.std == (0.1980, 0.2010, 0.1970)


# --- errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("mnist", "mnist: missing train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz] in "),
    ("cifar10", "cifar10: missing data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5 in "),
    ("cifar100", "cifar100: missing train in "),
    ("svhn", "svhn: missing "),
])
def test_missing_files_one_line(tmp_path, name, expected):
    with pytest.raises(DataError) as info:
        load_dataset(name, "train", tmp_path / "nowhere")
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message
    assert str(tmp_path / "nowhere") in message and "--data-root" in message


def test_default_root_is_data_slash_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"in data/cifar10/cifar-10-batches-py; .* extract it into data/cifar10"):
        load_dataset("cifar10", "test")
    with pytest.raises(DataError, match=r"missing data/svhn/test_32x32\.mat"):
        load_dataset("svhn", "test")


@pytest.mark.parametrize("name, valid", [("mnist", "'train', 'test'"), ("cifar10", "'train', 'test'"),
                                         ("cifar100", "'train', 'test'"), ("svhn", "'train', 'test', 'extra'"),
                                         ("digits", "'train' and 'test'")])
def test_unknown_split(tmp_path, name, valid):
    with pytest.raises(DataError, match=f"{valid}, not 'validation'"):
        load_dataset(name, "validation", tmp_path)


def test_on_disk_loaders_are_registered():
    assert {"mnist", "cifar10", "cifar100", "svhn", "digits"} <= set(DATASETS.names())


# --- digits (built in) -----------------------------------------------------------------------------------

def test_digits_fixed_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert train.images.shape[1:] == (1, 8, 8) and train.images.min() >= 0 and train.images.max() <= 1
    assert train.images.max() == 1 and set(train.labels.tolist()) == set(range(10))
    again = load_dataset("digits", "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
