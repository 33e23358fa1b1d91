"""Reader for the IDX format of MNIST-style files, strict about size.

torchvision reads these files too, but quietly: a truncated download becomes a
short dataset.  Here every byte count is checked against the header, so a bad
file is an error that names it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

# IDX type codes -> numpy dtypes (big-endian on disk).
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxError(ValueError):
    """An IDX file that is missing, truncated or malformed."""


# The most an IDX file may hold, decompressed (bounded decompression: a gzip "bomb" of a few
# MB cannot expand into all of memory).
MAX_BYTES = 2 * 1024**3


def idx_magic(dtype: np.dtype, ndim: int) -> int:
    """The 4-byte magic number that starts an IDX file of this dtype and rank
    (0x00000803 for MNIST's uint8 images [N, H, W], 0x00000801 for its labels)."""
    code = next(c for c, d in _DTYPES.items() if d.newbyteorder("=") == np.dtype(dtype).newbyteorder("="))
    return (code << 8) | ndim


def describe_magic(magic: int) -> str:
    """`0x00000803 (uint8, 3 dimensions)`: a magic number as a reader can check it."""
    code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    kind = _DTYPES[code].name if magic >> 16 == 0 and code in _DTYPES else "no IDX type"
    return f"0x{magic:08x} ({kind}, {ndim} dimension{'s' * (ndim != 1)})"


def read_idx(path: str | Path, magic: int | None = None) -> torch.Tensor:
    """Read one IDX file (optionally .gz) into a tensor of its stored dtype and shape.

    `magic`, when given, is the magic number the file must start with: a file of
    the wrong kind (labels where images belong, a damaged header) is then named as
    such, instead of being read with a shape taken from the wrong header (which
    looks like an absurd, "truncated" file).
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            try:
                with gzip.open(path, "rb") as f:  # streamed, and never more than MAX_BYTES out
                    raw = f.read(MAX_BYTES + 1)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise IdxError(f"{path}: not a valid gzip file ({e})") from None
        else:
            if path.is_file() and path.stat().st_size > MAX_BYTES:  # refused before it is read
                raise IdxError(f"{path}: over {MAX_BYTES:,} bytes, more than any IDX data set this reads (MNIST is "
                               "47 MB): not the file its name says?")
            raw = path.read_bytes()
    except FileNotFoundError:
        raise IdxError(f"{path}: file not found") from None
    if len(raw) > MAX_BYTES:
        raise IdxError(f"{path}: over {MAX_BYTES:,} bytes{' once decompressed' if path.suffix == '.gz' else ''}, "
                       "more than any IDX data set this reads (MNIST is 47 MB): not the file its name says?")
    if len(raw) < 4:
        raise IdxError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise IdxError(
            f"{path}: wrong magic number {describe_magic(found)}, expected {describe_magic(magic)}: "
            "this is not the file its name says (swapped or damaged). Replace the file (delete it and download again)."
        )
    zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _DTYPES or ndim == 0:
        raise IdxError(
            f"{path}: not an IDX file (magic bytes {raw[:4].hex()}; expected 0000 + type "
            f"{'/'.join(f'{t:02x}' for t in _DTYPES)} + number of dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[type_code]
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise IdxError(
            f"{path}: {what}: header says shape {shape} ({expected} bytes in all), "
            f"file has {len(raw)} bytes. Replace the file (delete it and download again)."
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))
