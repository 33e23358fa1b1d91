"""Prepared-data columns written in chunks: preparing a corpus larger than memory.

A task that can read its files incrementally (`stream_data(writer)`, see
`prepared.prepare`) appends each chunk of encoded rows to growing `.npy` files
instead of building the whole `Splits` in memory first, so the preparation's
peak memory is one chunk plus the vocabulary, whatever the corpus size.

Each file starts with a reserved 128-byte header that is rewritten with the
real shape when the column is closed; it is formatted exactly as `numpy.save`
formats it (a 1-D array's header is always 128 bytes), so an entry written in
chunks is byte for byte the one `numpy.save` of the whole array would write.
"""

from __future__ import annotations

import itertools
import os
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ...messages import is_main_process

_HEADER = 128  # magic + version + length + dict, padded as numpy pads it (ARRAY_ALIGN 64)
T = TypeVar("T")


def npy_header(dtype: np.dtype, length: int, row: tuple[int, ...] = ()) -> bytes:
    """The `.npy` v1.0 header numpy.save writes for a C-order array of `length` rows of shape
    `row` (numpy's own layout)."""
    fields = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (length, *row)}
    text = "{" + "".join(f"{k!r}: {v!r}, " for k, v in sorted(fields.items())) + "}"
    pad = 64 - ((6 + 2 + 2 + len(text) + 1) % 64)
    body = (text + " " * pad + "\n").encode("latin1")
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body
    if len(header) != _HEADER:  # a 1-D or 2-D shape never needs more; keep the reserved size honest
        raise ValueError(f"npy header of {len(header)} bytes, {_HEADER} reserved")
    return header


class GrowingArray:
    """A `.npy` file of rows (scalars, or `row`-shaped arrays: a tagger's per-word characters)
    appended to chunk by chunk; the header is written at `close`."""

    def __init__(self, path: Path, dtype: Any, durable: bool = True, row: tuple[int, ...] = ()) -> None:
        self.path, self.dtype, self.length, self.durable, self.row = path, np.dtype(dtype), 0, durable, tuple(row)
        self._file = open(path, "wb")
        self._file.write(b"\0" * _HEADER)

    def append(self, values: Any) -> None:
        array = np.ascontiguousarray(values, dtype=self.dtype)
        if self.row and tuple(array.shape[1:]) != self.row:
            raise ValueError(f"{self.path.name}: rows of shape {tuple(array.shape[1:])}, the column's are {self.row}")
        self._file.write(array.tobytes())
        self.length += len(array)

    def close(self) -> dict[str, Any]:
        """Header in place, flushed to disk: the column's manifest record."""
        self._file.seek(0)
        self._file.write(npy_header(self.dtype, self.length, self.row))
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())
        self._file.close()
        return {"file": self.path.name, "dtype": str(self.dtype), "shape": [self.length, *self.row],
                "bytes": self.path.stat().st_size}


class RaggedWriter:
    """A `Ragged` column (values, offsets, lengths) appended to one chunk of sequences at a time."""

    def __init__(self, folder: Path, prefix: str, dtype: Any = np.int64, durable: bool = True,
                 row: tuple[int, ...] = ()) -> None:
        self.values = GrowingArray(folder / f"{prefix}.values.npy", dtype, durable, row)
        self.offsets = GrowingArray(folder / f"{prefix}.offsets.npy", np.int64, durable)
        self.lengths = GrowingArray(folder / f"{prefix}.lengths.npy", np.int64, durable)
        self.offsets.append([0])
        self._end = 0

    def append(self, sequences: Sequence[Sequence[int]]) -> None:
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        total = int(lengths.sum())
        self.values.append(np.fromiter(itertools.chain.from_iterable(sequences), dtype=self.values.dtype, count=total))
        self.offsets.append(self._end + np.cumsum(lengths))
        self.lengths.append(lengths)
        self._end += total

    def append_flat(self, values: Any, lengths: Any) -> None:
        """Sequences given as their concatenated values and their lengths (no list per sequence)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        self.values.append(values)
        self.offsets.append(self._end + np.cumsum(lengths))
        self.lengths.append(lengths)
        self._end += int(lengths.sum())

    def close(self) -> dict[str, Any]:
        return {"kind": "ragged", "values": self.values.close(), "offsets": self.offsets.close(),
                "lengths": self.lengths.close()}


class EntryWriter:
    """The columns of an entry being written in chunks: `ragged(split, i)` / `dense(split, i, dtype)`
    open column i of a split; `close()` gives the manifest's "splits" record."""

    def __init__(self, folder: Path, durable: bool = True) -> None:
        self.folder, self.durable = folder, durable
        self._columns: dict[str, dict[int, GrowingArray | RaggedWriter]] = {}

    def ragged(self, split: str, column: int, dtype: Any = np.int64, row: tuple[int, ...] = ()) -> RaggedWriter:
        """Column `column` of `split` as a Ragged column: opened on first use, the same writer after
        (the pieces of one shard append to one column).  `row`: the shape of each value (a
        sequence of fixed-width rows), () for scalars."""
        found = self._columns.get(split, {}).get(column)
        if found is None:
            found = RaggedWriter(self.folder, f"{split}.{column}", dtype, self.durable, row)
            self._columns.setdefault(split, {})[column] = found
        return found  # type: ignore[return-value]

    def dense(self, split: str, column: int, dtype: Any) -> GrowingArray:
        """Column `column` of `split` as a flat array (opened on first use, as `ragged`)."""
        found = self._columns.get(split, {}).get(column)
        if found is None:
            found = GrowingArray(self.folder / f"{split}.{column}.npy", dtype, self.durable)
            self._columns.setdefault(split, {})[column] = found
        return found  # type: ignore[return-value]

    def put(self, split: str, column: int, value: Any) -> None:
        """A whole column at once (an array of any shape, or a `Ragged`): what a task that loads
        its data in memory (the default one-piece stream) writes."""
        self._columns.setdefault(split, {})[column] = _Whole(self.folder, f"{split}.{column}", value)

    def close(self) -> dict[str, list[dict[str, Any]] | None]:
        out: dict[str, list[dict[str, Any]] | None] = {}
        for split in ("train", "val", "test"):
            columns = self._columns.get(split)
            if not columns:
                out[split] = None
                continue
            specs = []
            for i in sorted(columns):
                spec = columns[i].close()
                specs.append(spec if "kind" in spec else {"kind": "dense", **spec})
            out[split] = specs
        return out


class _Whole:
    """A column written at once, closed like the growing ones."""

    def __init__(self, folder: Path, prefix: str, value: Any) -> None:
        self.folder, self.prefix, self.value = folder, prefix, value

    def close(self) -> dict[str, Any]:
        from ..ragged import Ragged

        if isinstance(self.value, Ragged):
            parts = {"values": self.value.values, "offsets": self.value.offsets, "lengths": self.value.lengths_cpu}
            return {"kind": "ragged", **{k: save_array(self.folder, f"{self.prefix}.{k}", v) for k, v in parts.items()}}
        return {"kind": "dense", **save_array(self.folder, self.prefix, self.value)}


def save_array(folder: Path, name: str, value: Any) -> dict[str, Any]:
    """One whole array as `name`.npy (numpy.save's format, fsynced): its manifest record."""
    array = value.detach().cpu().contiguous().numpy() if hasattr(value, "detach") else np.ascontiguousarray(value)
    path = folder / f"{name}.npy"
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {"file": path.name, "dtype": str(array.dtype), "shape": list(array.shape), "bytes": path.stat().st_size}


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def progress(description: str, total: int | None = None) -> Any:
    """A tqdm bar with rows/s on stderr (the main process only; stdout stays machine-readable)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=" rows", unit_scale=True, file=sys.stderr, mininterval=2.0,
                disable=not is_main_process(), dynamic_ncols=True)


def progress_bytes(description: str, total: int | None = None) -> Any:
    """A tqdm bar in MB/s on stderr (the main process only), told the bytes of each piece done."""
    from tqdm import tqdm

    from ...messages import is_main_process

    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
                mininterval=1.0, disable=not is_main_process(), dynamic_ncols=True)
