"""MNIST and Fashion-MNIST as whole uint8 tensors, read from torchvision's layout.

The files are small (47 MB of pixels), so the fast path holds each split once as
one tensor and cuts batches from it; `torchvision_dataset` keeps the classic
Dataset + DataLoader path for transforms that need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .readers.idx import IdxError, idx_magic, read_idx

# data.dataset -> torchvision's folder name (and class name).
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IMAGES_MAGIC = idx_magic(np.dtype(np.uint8), 3)  # 0x00000803
LABELS_MAGIC = idx_magic(np.dtype(np.uint8), 1)  # 0x00000801
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataMissingError(FileNotFoundError):
    """The dataset's files are not where the job says they are."""


def raw_files(root: str | Path, dataset: str, train: bool) -> list[Path]:
    """The exact files torchvision's layout puts a split at."""
    folder = Path(root) / FOLDERS[dataset] / "raw"
    return [folder / name for name in FILES[train]]


def ensure_files(root: str | Path, dataset: str, download: bool) -> None:
    """Make sure both splits' files exist, downloading through torchvision if allowed."""
    wanted = raw_files(root, dataset, True) + raw_files(root, dataset, False)
    missing = [p for p in wanted if not p.exists()]
    if not missing:
        return
    reason = "data.download is false"
    if download:
        try:
            import torchvision.datasets as tvd

            for train in (True, False):
                getattr(tvd, FOLDERS[dataset])(str(root), train=train, download=True)
        except Exception as e:  # no network, mirror down, disk full: all end the same way
            reason = f"the download failed ({type(e).__name__}: {e})"
        missing = [p for p in wanted if not p.exists()]
        if not missing:
            return
    listing = "\n  ".join(str(p) for p in missing)
    raise DataMissingError(
        f"{dataset}: missing files ({reason}):\n  {listing}\n"
        f"Put the uncompressed IDX files there, point data.root (or the environment "
        f"variable LSTM_TRAIN_DATA) at a folder holding {FOLDERS[dataset]}/raw/, or set "
        f"data.download=true on a machine with network access."
    )


def load_split(root: str | Path, dataset: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 [N, 28, 28] and labels as int64 [N], checked against each other."""
    images_path, labels_path = raw_files(root, dataset, train)
    images, labels = read_idx(images_path, IMAGES_MAGIC), read_idx(labels_path, LABELS_MAGIC)
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise IdxError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {tuple(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise IdxError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}"
        )
    return images, labels.long()
