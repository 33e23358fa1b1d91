"""Arrow arrays to and from numpy through their buffers, never through pyarrow's pandas shim.

pyarrow imports pandas (when it is installed) the first time `pa.array`, `pa.scalar`,
`Array.to_numpy` or `np.asarray(array)` is called: in a preparation's forked worker that
import was the largest single cost of a table piece (~0.3 s of a 10 MB CSV's ~1.5 s on the
2-core AMD of the benchmark book, and pandas' memory on top).  The column path
(table_columns.py) builds and reads its arrays here instead: a null-free array is an
offsets/values buffer pair, read and written by numpy with no copy where the layout allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def strings(data: bytes) -> Any:
    """One UTF-8 string holding `data` (a large_string array of length 1), checked as UTF-8 (else
    `pa.ArrowInvalid`, as a cast from binary raises)."""
    import pyarrow as pa

    out = pa.Array.from_buffers(pa.large_string(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int64)),
                                                        pa.py_buffer(data)])
    out.validate(full=True)
    return out


def binaries(items: list[bytes]) -> Any:
    """A large_binary array of `items`."""
    import pyarrow as pa

    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, items), np.int64, count=len(items)), out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(items), [None, pa.py_buffer(offsets),
                                                                  pa.py_buffer(b"".join(items))])


def empties(n: int) -> Any:
    """A large_binary array of `n` empty values (an element-wise separator)."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(np.zeros(n + 1, np.int64)),
                                                        pa.py_buffer(b"")])


def integers(values: np.ndarray) -> Any:
    """An int64 array of `values` (indices for `take`)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def booleans(mask: np.ndarray) -> Any:
    """A boolean array of `mask` (a selection for `filter`)."""
    import pyarrow as pa

    mask = np.asarray(mask, bool)
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(np.packbits(mask, bitorder="little"))])


def to_numpy(array: Any) -> np.ndarray:
    """A null-free boolean or fixed-width numeric Arrow array (or a chunked one) as numpy: no
    copy for numbers, bits unpacked for booleans."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count:
        raise ValueError("an Arrow array with nulls")
    n, offset, data = len(array), array.offset, array.buffers()[1]
    if pa.types.is_boolean(array.type):
        bits = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        return np.unpackbits(bits, count=offset + n, bitorder="little")[offset:].astype(bool)
    dtype = np.dtype(str(array.type))
    if data is None:
        return np.zeros(0, dtype)
    return np.frombuffer(data, dtype, count=n, offset=offset * dtype.itemsize)
