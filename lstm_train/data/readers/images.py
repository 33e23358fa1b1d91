"""Opening a user's image file with a pixel limit.

Pillow decodes whatever size a header declares; a small PNG can declare 100,000 x 100,000
pixels (a "decompression bomb": 10 GB of memory for a 100 KB file).  Every image a user
hands to `predict` opens through `open_image`, which reads the header only, refuses more
than MAX_PIXELS pixels with a message naming the file, and turns Pillow's own bomb error
into the same message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Far more than any model here reads (28 x 28 digits, strips a few hundred pixels wide),
# far less than what would exhaust a node's memory (about 100 MB as RGBA).
MAX_PIXELS = 25_000_000


class ImageTooLarge(ValueError):
    """An image declaring more pixels than MAX_PIXELS (a ValueError: the CLI exits 2)."""


def too_large(name: str | Path, width: int, height: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"{name}: {width:,} x {height:,} pixels, over the limit of {MAX_PIXELS:,} pixels "
        "(lstm_train.data.readers.images.MAX_PIXELS; a small file declaring a huge image is a decompression bomb): "
        "scale the image down first")


def open_image(name: str | Path) -> Any:
    """PIL.Image.open(name) with the pixel limit checked before any pixel is decoded."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # open reads the header only: we check its size, with our message
    try:
        img = Image.open(name)
    finally:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own check for what decodes later (frames, crops)
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise too_large(name, width, height)
    return img
