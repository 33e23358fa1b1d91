"""Reading a user's `.npy` and `.npz` files: only what their bytes can hold is allocated.

`numpy.load` trusts the header: a 128-byte `.npy` claiming 10^12 elements makes it allocate
8 TB (a MemoryError traceback, or the OOM killer).  Here the header is read first and the
claim checked against the bytes there are (the file's size; in an `.npz`, the member's
size, itself bounded by what deflate can expand the stored bytes to), then the array is
loaded without pickles.  A file that fails is a `ValueError` naming it, the claim and the size."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

import numpy as np

DEFLATE_RATIO = 1032  # the most deflate can expand a byte to (RFC 1951's longest match per 258 bytes)


class NpyFileError(ValueError):
    """A `.npy`/`.npz` that is not an array file its bytes can hold."""


def _header(f: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header bytes) of the `.npy` stream at its start; a pickle (object) array refused."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f, max_header_size=10000)
    except (ValueError, OSError, SyntaxError, TypeError, EOFError) as e:
        raise NpyFileError(f"{where}: not a .npy array ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    if dtype.hasobject:
        raise NpyFileError(f"{where}: holds Python objects (dtype {dtype}); give arrays of numbers")
    return tuple(shape), dtype, f.tell()


def _claimed(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.float64)) * dtype.itemsize if shape else dtype.itemsize


def _refuse(where: str, shape: tuple[int, ...], dtype: np.dtype, have: int) -> NpyFileError:
    return NpyFileError(f"{where}: its header claims {list(shape)} {dtype} ({_claimed(shape, dtype):,} bytes) but "
                        f"{have:,} bytes follow it; a damaged or forged file, not loaded")


def load_npy(path: Path) -> np.ndarray:
    """A `.npy` array, after its header's claim is checked against the file's size."""
    path = Path(path)
    with open(path, "rb") as f:
        shape, dtype, offset = _header(f, str(path))
        have = path.stat().st_size - offset
        if _claimed(shape, dtype) > have:
            raise _refuse(str(path), shape, dtype, have)
    return np.load(path, allow_pickle=False)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an `.npz`, each member's header checked against the member's size (and that
    size against what its stored bytes can expand to) before anything is allocated."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise NpyFileError(f"{path}: not a .npz archive ({e})") from None
    out = {}
    with archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            where = f"{path} (array {name})"
            if info.compress_type == zipfile.ZIP_STORED:
                bound = info.compress_size
            else:
                bound = info.compress_size * DEFLATE_RATIO
            try:
                with archive.open(info) as f:
                    shape, dtype, offset = _header(f, where)
                    have = min(info.file_size, bound) - offset
                    if _claimed(shape, dtype) > have:
                        raise _refuse(where, shape, dtype, have)
                with archive.open(info) as f:
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
            except NpyFileError:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise NpyFileError(f"{where}: cannot read it ({str(e)[:160]})") from None
    return out
