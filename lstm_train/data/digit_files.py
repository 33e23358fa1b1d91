"""Labelled digit images a user brings to `lstm-train evaluate` (and single images for `predict`).

Two layouts, the two an MNIST user has: MNIST's own IDX files (an images file [N, 28, 28] and
its labels file [N], `.gz` or not, read by the strict `idx.read_idx`), and image folders in
torchvision's `ImageFolder` layout (one subfolder per class, named by the class or its number).
Every image opens through `images.open_image` (a pixel limit before anything is decoded) and
every IDX file is bounded by `idx.MAX_BYTES`, so no file decides the memory taken; each error
names the file and what would be valid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .readers.idx import IdxError, read_idx

SIDE = 28  # the models read 28 x 28 digits, row by row
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def digit_pixels(name: str | Path) -> torch.Tensor:
    """An image file as uint8 [28, 28], white digit on black as MNIST: gray, scaled to 28 x 28,
    dark ink on light paper inverted.  A missing or unreadable file is a ValueError naming it."""
    from PIL import Image, UnidentifiedImageError

    from .readers.images import open_image

    try:
        with open_image(name) as img:
            gray = img.convert("L")
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{name}: not a readable image ({e})") from None
    if gray.size != (SIDE, SIDE):
        gray = gray.resize((SIDE, SIDE), Image.BILINEAR)
    pixels = torch.from_numpy(np.array(gray, dtype=np.uint8))  # [SIDE, SIDE]: the image's own buffer, copied once
    return 255 - pixels if pixels.float().mean() > 127 else pixels  # MNIST is light ink on black


def labelled_images(paths: list[Path], classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N, 28, 28] and class ids int64 [N] of IDX pairs and image folders, in the
    order given (an IDX pair: its images file, then its labels file, or the other way round)."""
    images, labels, pending = [], [], []
    for path in paths:
        if path.is_dir():
            x, y = image_folder(path, classes)
        else:
            pending.append(path)
            if len(pending) < 2:
                continue
            x, y = idx_pair(pending, len(classes))
            pending = []
        images.append(x)
        labels.append(y)
    if pending:
        raise IdxError(f"{pending[0]}: an IDX file needs its partner (images t10k-images-idx3-ubyte with labels "
                       "t10k-labels-idx1-ubyte, given one after the other), or give image folders")
    return torch.cat(images), torch.cat(labels)


def idx_pair(pair: list[Path], n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An images file uint8 [N, 28, 28] and a labels file [N] with ids below `n_classes`, either order."""
    read = {p: read_idx(p) for p in pair}
    by_rank = {t.dim(): p for p, t in read.items()}
    if set(by_rank) != {1, 3}:
        shapes = ", ".join(f"{p}: {tuple(t.shape)}" for p, t in read.items())
        raise IdxError(f"an IDX pair is an images file [N, {SIDE}, {SIDE}] and a labels file [N]; got {shapes}")
    images_path, labels_path = by_rank[3], by_rank[1]
    images, labels = read[images_path], read[labels_path].long()
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (SIDE, SIDE):
        raise IdxError(f"{images_path}: {images.dtype} images {tuple(images.shape[1:])}; the run reads uint8 "
                       f"{SIDE}x{SIDE} digits as MNIST stores them")
    if len(labels) != len(images):
        raise IdxError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}")
    bad = ((labels < 0) | (labels >= n_classes)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise IdxError(f"{labels_path}: label {int(labels[i])} at position {i} is not a class of the run "
                       f"(0..{n_classes - 1})")
    return images, labels


def image_folder(folder: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ImageFolder layout: FOLDER/<class>/<image>, a class named as the run's (a
    digit's name is its number) or by its number (Fashion-MNIST's "T-shirt/top" is 0)."""
    index = {name: i for i, name in enumerate(classes)} | {str(i): i for i in range(len(classes))}
    images, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not sub.is_dir():
            raise ValueError(f"{sub}: an image folder holds one subfolder per class, not files (FOLDER/<class>/<image>)")
        if sub.name not in index:
            raise ValueError(f"{sub}: {sub.name!r} is not a class of the run; name class folders "
                             f"{', '.join(classes)} or 0..{len(classes) - 1}")
        for file in sorted(p for p in sub.iterdir() if not p.name.startswith(".")):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{file}: not an image file by its name ({', '.join(IMAGE_SUFFIXES)})")
            images.append(digit_pixels(file))
            labels.append(index[sub.name])
    if not images:
        raise ValueError(f"{folder}: no images (the layout is FOLDER/<class>/<image>.png)")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)
