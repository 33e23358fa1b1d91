"""IDX files and MNIST loading: real files written by the test, strict about size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_train.data.readers.idx import IdxError, read_idx
from lstm_train.data.mnist import DataMissingError, ensure_files, load_split

from .conftest import make_fake_mnist, write_idx


def test_roundtrip_all_types(tmp_path: Path) -> None:
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        data = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        write_idx(tmp_path / "x", data)
        out = read_idx(tmp_path / "x")
        assert out.shape == (2, 3, 4) and np.array_equal(out.numpy(), data)


def test_matches_torchvision_on_real_files(mnist_root: Path) -> None:
    import torchvision

    images, labels = load_split(mnist_root, "mnist", train=False)
    tv = torchvision.datasets.MNIST(str(mnist_root), train=False, download=False)
    assert images.shape == (10000, 28, 28) and torch.equal(images, tv.data) and torch.equal(labels, tv.targets)


def test_truncated_file_is_an_error_naming_it(tmp_path: Path) -> None:
    root = make_fake_mnist(tmp_path)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxError, match=rf"{path}: truncated"):
        load_split(root, "mnist", train=True)


def test_garbage_and_mismatched_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"<html>not found</html>")
    with pytest.raises(IdxError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    root = make_fake_mnist(tmp_path / "d")
    write_idx(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8))
    with pytest.raises(IdxError, match="7 labels for 200 images"):
        load_split(root, "mnist", train=False)


def test_wrong_magic_number_says_expected_and_found(tmp_path: Path) -> None:
    root = make_fake_mnist(tmp_path)
    raw = root / "MNIST" / "raw"
    images = raw / "t10k-images-idx3-ubyte"
    damaged = bytearray(images.read_bytes())
    damaged[3] = 4  # one flipped header byte: read blindly, a 4-d "image" with an absurd last dimension
    images.write_bytes(bytes(damaged))
    with pytest.raises(IdxError) as e:
        load_split(root, "mnist", train=False)
    assert str(e.value).startswith(f"{images}: wrong magic number 0x00000804 (uint8, 4 dimensions), "
                                   "expected 0x00000803 (uint8, 3 dimensions)")
    assert "truncated" not in str(e.value)
    (raw / "t10k-labels-idx1-ubyte").replace(images)  # the labels file where the images belong
    with pytest.raises(IdxError, match=r"wrong magic number 0x00000801 \(uint8, 1 dimension\), expected 0x00000803"):
        load_split(root, "mnist", train=False)


def test_missing_files_listed_with_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as e:
        ensure_files(tmp_path, "fashion_mnist", download=False)
    msg = str(e.value)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert str(tmp_path / "FashionMNIST" / "raw" / name) in msg
    assert "LSTM_TRAIN_DATA" in msg and "data.download" in msg


def test_failed_download_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No network here: torchvision's download really fails (mirrors refused) and we say so.
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    with pytest.raises(DataMissingError, match="the download failed"):
        ensure_files(tmp_path, "mnist", download=True)
