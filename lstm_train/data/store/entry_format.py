"""The prepared-data entry format: a folder of `.npy` columns and a `manifest.json`, in one place.

As Megatron keeps its indexed dataset's writer, index and reader in one file, everything that
knows the entry's bytes is here, side by side:

- writing: columns appended chunk by chunk (`EntryWriter`, `GrowingArray`, `RaggedWriter`),
  so that preparing a corpus larger than memory holds one chunk plus the vocabulary.  Each
  file starts with a reserved 128-byte header rewritten with the real shape on close, formatted
  exactly as `numpy.save` formats it (a 1-D array's header is always 128 bytes), so a column
  written in chunks is byte for byte the one `numpy.save` of the whole array writes;
- merging: the runner's units' columns concatenated in piece order (`merge`:
  `os.copy_file_range`, ragged offsets rebased a chunk at a time);
- validation: a manifest checked by type, field by field, and against each `.npy` header
  (dtype, shape, no object dtype, no header claiming more bytes than the file holds, plain file
  names inside the entry) before anything is mapped (`read_manifest`, `validate_manifest`);
- reading: every column memory-mapped copy-on-write (`map_entry`): the pages live once in
  the page cache, shared by every rank on the node; torch wants writable arrays, and a stray
  in-place write then costs one private page instead of a corrupted cache.

Why `.npy` and not Arrow: the columns are already flat arrays (`Ragged` is an Arrow list layout
in all but name), `np.load(mmap_mode=...)` plus `torch.from_numpy` maps them with no copy and no
dependency, and a measured map of the same 400 MB of token ids took about the same time either
way (scripts/bench_prepared.py --formats).  torch is imported only where an entry is mapped:
the streams that write entries run in forked workers and SLURM array tasks without it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...files.atomic import fsync_path

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_HEADER = 128  # magic + version + length + dict, padded as numpy pads it (ARRAY_ALIGN 64)
_COPY = 64 << 20


class PreparedDataError(ValueError):
    """Prepared data that cannot be made or read (a user-fixable condition: exit 2)."""


# ---------------------------------------------------------------------------
# Writing


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
        self._file.write(array.reshape(-1).view(np.uint8).data)  # the array's own bytes: no copy
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


def encode_info(value: Any, folder: Path, counter: list[int]) -> Any:
    """`info` as JSON; tensors and arrays in it go to their own .npy files."""
    import torch

    if isinstance(value, (torch.Tensor, np.ndarray)):
        counter[0] += 1
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        return {"__array__": save_array(folder, f"info{counter[0]}", tensor)}
    if isinstance(value, dict):
        return {str(k): encode_info(v, folder, counter) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_info(v, folder, counter) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise PreparedDataError(f"Splits.info holds a {type(value).__name__}, which prepared data cannot store "
                            "(JSON values, tensors and arrays only)")


def new_manifest(key: str, task_name: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "key": key, "task": task_name, "sources": sources,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "splits": {}}


def close_entry(folder: Path, manifest: dict[str, Any], info: Any) -> dict[str, Any]:
    manifest["info"] = encode_info(info, folder, [0])
    manifest["bytes"] = sum(p.stat().st_size for p in folder.iterdir())
    with open(folder / MANIFEST, "w") as f:  # last: an entry without a manifest is never read
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return manifest


# ---------------------------------------------------------------------------
# Merging


def merge(parts: list[tuple[Path, dict[str, Any]]], out: Path) -> dict[str, Any]:
    """The units' columns concatenated in order into `out`: the entry's "splits" record.  Every
    column is written first and then all are synced at once (`sync_files`), not one by one."""
    out.mkdir(parents=True, exist_ok=True)
    splits = _merge_splits(parts, out)
    sync_files([out / spec["file"] for spec in array_specs({"splits": splits})])
    return splits


def on_threads(fn: Callable[[Any], Any], items: list[Any], most: int) -> list[Any]:
    """`fn` of every item, in order, on up to `most` threads (I/O and hashing release the GIL);
    one item or none runs here, without a pool."""
    if len(items) <= 1:
        return list(map(fn, items))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(len(items), most)) as pool:
        return list(pool.map(fn, items))


def sync_files(paths: list[Path]) -> None:
    """fsync every file, concurrently: ext4 (and other journalled filesystems) commit the
    concurrent syncs together, where one after another each waits for its own journal commit."""
    on_threads(lambda path: fsync_path(path, os.O_NOFOLLOW), paths, 16)


def _merge_splits(parts: list[tuple[Path, dict[str, Any]]], out: Path) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        present = [(folder, rec[split]) for folder, rec in parts if rec.get(split)]
        if not present:
            splits[split] = None
            continue
        width = max(len(cols) for _, cols in present)
        columns = []
        for i in range(width):
            specs = [(folder, cols[i]) for folder, cols in present if i < len(cols)]
            if specs[0][1]["kind"] == "ragged":
                columns.append(_merge_ragged(specs, out, f"{split}.{i}"))
            else:
                columns.append({"kind": "dense", **_concat([(f, s) for f, s in specs], out / f"{split}.{i}.npy")})
        splits[split] = columns
    return splits


def _payload(path: Path) -> tuple[int, np.dtype, tuple[int, ...]]:
    with _open_nofollow(path) as f:
        shape, _, dtype = _read_header(f)
        return f.tell(), dtype, shape


def _write_column(target: Path, dtype: np.dtype, shape: tuple[int, ...], body: Callable[[Any], None]) -> dict[str, Any]:
    """A merged column: its header (numpy.save's), then what `body(f)` writes (synced by `merge`): its record."""
    with open(target, "wb") as f:
        f.write(npy_header(dtype, shape[0], tuple(shape[1:])))
        body(f)
    return {"file": target.name, "dtype": str(dtype), "shape": list(shape), "bytes": target.stat().st_size}


def _concat(specs: Iterable[tuple[Path, dict[str, Any]]], target: Path) -> dict[str, Any]:
    """.npy files concatenated along axis 0 into `target` (the kernel copies: no byte passes here)."""
    heads = [(folder / spec["file"], *_payload(folder / spec["file"])) for folder, spec in specs]
    dtype, rest = heads[0][2], tuple(heads[0][3][1:])

    def body(f: Any) -> None:
        for path, offset, _, _ in heads:
            f.flush()  # the header (and earlier parts) on the descriptor before the kernel copies after it
            with _open_nofollow(path) as src:
                size = os.fstat(src.fileno()).st_size - offset
                copied = 0
                while copied < size:
                    n = os.copy_file_range(src.fileno(), f.fileno(), min(_COPY, size - copied), offset + copied)
                    if n == 0:
                        break
                    copied += n

    return _write_column(target, dtype, (sum(h[3][0] for h in heads), *rest), body)


def transform_into(f: Any, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...],
                   fn: Callable[[np.ndarray], np.ndarray]) -> None:
    array = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape) if shape[0] else np.zeros(shape, dtype)
    for start in range(0, shape[0], 1 << 22):
        f.write(np.ascontiguousarray(fn(np.asarray(array[start:start + (1 << 22)]))).tobytes())


def _merge_ragged(specs: list[tuple[Path, dict[str, Any]]], out: Path, prefix: str) -> dict[str, Any]:
    values = _concat([(f, s["values"]) for f, s in specs], out / f"{prefix}.values.npy")
    lengths = _concat([(f, s["lengths"]) for f, s in specs], out / f"{prefix}.lengths.npy")
    bases = np.cumsum([0] + [s["values"]["shape"][0] for _, s in specs])
    # each unit's offsets start at 0 and have one more entry than its sequences: keep the
    # first unit's leading 0 only, shift the others by the values before them
    heads = [(f / s["offsets"]["file"], *_payload(f / s["offsets"]["file"])) for f, s in specs]

    def body(fh: Any) -> None:
        fh.write(np.zeros(1, np.int64).tobytes())
        for k, (path, offset, dtype, shape) in enumerate(heads):
            base = int(bases[k])
            transform_into(fh, path, offset + dtype.itemsize, dtype, (shape[0] - 1,), lambda a, b=base: a + b)

    offsets = _write_column(out / f"{prefix}.offsets.npy", np.dtype(np.int64), (1 + sum(h[3][0] - 1 for h in heads),), body)
    return {"kind": "ragged", "values": values, "offsets": offsets, "lengths": lengths}


def file_digest(path: Path) -> str:
    """blake2b of a file, read without following a symlink: a unit's files before a merge, a source file
    (its path resolved) for the entry's key."""
    h = hashlib.blake2b(digest_size=16)
    buffer = bytearray(1 << 20)  # read into one small buffer: no 8 MB object per chunk, per thread (runner checks
    view = memoryview(buffer)  # units on threads), for the allocator to keep
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


def _read_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the `.npy` file `f`, left at its first byte of data."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f, max_header_size=10000)


def _open_nofollow(path: Path) -> Any:
    return open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW))


# ---------------------------------------------------------------------------
# Validation


class DamagedEntry(Exception):
    """An entry whose manifest or arrays are malformed (the reason is the message)."""


class StaleEntry(Exception):
    """An entry that must not be read (the reason is the message)."""


def safe_name(name: Any) -> str:
    """A manifest's file name: a plain name inside the entry, nothing else."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or name.startswith("."):
        raise DamagedEntry(f"file name {name!r} is not a plain name inside the entry")
    return name


def _want(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                                                   else (types,))):
        raise DamagedEntry(f"{where} is {type(value).__name__}, expected "
                           f"{getattr(types, '__name__', None) or '/'.join(t.__name__ for t in types)}")
    return value


def _spec(spec: Any, where: str) -> dict[str, Any]:
    _want(spec, dict, where)
    safe_name(spec.get("file"))
    _want(spec.get("dtype"), str, f"{where}.dtype")
    shape = _want(spec.get("shape"), list, f"{where}.shape")
    for n in shape:
        if _want(n, int, f"{where}.shape") < 0:
            raise DamagedEntry(f"{where}.shape has a negative size")
    if _want(spec.get("bytes"), int, f"{where}.bytes") < 0:
        raise DamagedEntry(f"{where}.bytes is negative")
    return spec


def array_specs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every array spec of a manifest, each checked by type (`validate_manifest` first)."""
    found = []
    for split, columns in manifest["splits"].items():
        for i, column in enumerate(columns or []):
            where = f"splits.{split}[{i}]"
            _want(column, dict, where)
            if column.get("kind") == "ragged":
                found += [_spec(column.get(part), f"{where}.{part}") for part in ("values", "offsets", "lengths")]
            elif column.get("kind") == "dense":
                found.append(_spec(column, where))
            else:
                raise DamagedEntry(f"{where}.kind is {column.get('kind')!r}, expected 'ragged' or 'dense'")

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            if "__array__" in value:
                found.append(_spec(value["__array__"], where))
            for k, v in value.items():
                if k != "__array__":
                    walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    walk(manifest.get("info"), "info")
    return found


def validate_manifest(manifest: Any, folder: Path | None = None) -> list[dict[str, Any]]:
    """Check every field's type and, given the entry's folder, every array file against its
    `.npy` header; returns the array specs.  Raises DamagedEntry with the first problem."""
    _want(manifest, dict, "the manifest")
    _want(manifest.get("format"), int, "format")
    _want(manifest.get("key"), str, "key")
    _want(manifest.get("task"), str, "task")
    _want(manifest.get("sources"), list, "sources")
    _want(manifest.get("bytes"), int, "bytes")
    splits = _want(manifest.get("splits"), dict, "splits")
    for name, columns in splits.items():
        if name not in ("train", "val", "test"):
            raise DamagedEntry(f"splits has an unknown split {name!r}")
        if columns is not None:
            _want(columns, list, f"splits.{name}")
    specs = array_specs(manifest)
    if folder is not None:
        for spec in specs:
            check_header(folder / spec["file"], spec)
    return specs


def check_header(path: Path, spec: dict[str, Any]) -> None:
    """The `.npy` header agrees with the manifest and with the file's size (read the header only)."""
    try:
        size = os.lstat(path).st_size
        with _open_nofollow(path) as f:
            shape, fortran, dtype = _read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise DamagedEntry(f"{path.name} is missing") from None
    except (OSError, ValueError, SyntaxError, TypeError) as e:
        raise DamagedEntry(f"{path.name}: unreadable .npy header ({str(e)[:120]})") from None
    if dtype.hasobject:
        raise DamagedEntry(f"{path.name} holds Python objects (dtype {dtype}); prepared data holds numbers only")
    if fortran:
        raise DamagedEntry(f"{path.name} is Fortran-ordered; prepared data is C-ordered")
    if str(dtype) != spec["dtype"] or list(shape) != spec["shape"]:
        raise DamagedEntry(f"{path.name}: {dtype} {list(shape)}, the manifest says {spec['dtype']} {spec['shape']}")
    claimed = offset + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if claimed != size or size != spec["bytes"]:
        raise DamagedEntry(f"{path.name}: the header claims {claimed} bytes, the file has {size}, "
                           f"the manifest says {spec['bytes']}")


def read_manifest(folder: Path, key: str) -> dict[str, Any]:
    """The entry's manifest, checked: format version, key, every file present with its size."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise StaleEntry(f"no {MANIFEST} (an interrupted preparation)") from None
    except (OSError, ValueError) as e:
        raise StaleEntry(f"unreadable {MANIFEST} ({e})") from None
    if not isinstance(manifest, dict):  # trust(27)
        raise DamagedEntry(f"{MANIFEST} holds a {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT_VERSION:
        raise StaleEntry(f"format version {manifest.get('format')!r}, this lstm_train reads {FORMAT_VERSION}")
    if manifest.get("key") != key:
        raise StaleEntry(f"its digest {manifest.get('key')!r} is not the one of its inputs ({key})")
    validate_manifest(manifest, folder)  # trust(27): types, plain names, .npy headers vs sizes
    return manifest


# ---------------------------------------------------------------------------
# Reading


def _map_array(folder: Path, spec: dict[str, Any]) -> Any:
    import torch

    path = folder / spec["file"]
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False) if spec["bytes"] > 128 + 8 else \
            np.load(path, allow_pickle=False)
    except ValueError as e:  # an empty array cannot be mapped; a damaged header
        if "empty" in str(e) or "cannot mmap" in str(e):
            array = np.load(path, allow_pickle=False)
        else:
            raise StaleEntry(f"{path.name}: {e}") from None
    if str(array.dtype) != spec["dtype"] or list(array.shape) != spec["shape"]:
        raise StaleEntry(f"{path.name}: {array.dtype} {list(array.shape)}, the manifest says "
                         f"{spec['dtype']} {spec['shape']}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _decode_info(value: Any, folder: Path) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return _map_array(folder, value["__array__"]).clone()
        return {k: _decode_info(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_info(v, folder) for v in value]
    return value


def map_entry(folder: Path, manifest: dict[str, Any]) -> Any:
    """The entry's Splits, every column memory-mapped (no copy of the data)."""
    from ..ragged import Ragged
    from ..splits import Splits

    splits: dict[str, Any] = {}
    for name, columns in manifest["splits"].items():
        if columns is None:
            splits[name] = None
            continue
        out = []
        for column in columns:
            if column["kind"] == "ragged":
                out.append(Ragged(_map_array(folder, column["values"]), _map_array(folder, column["offsets"]),
                                  _map_array(folder, column["lengths"])))
            else:
                out.append(_map_array(folder, column))
        splits[name] = tuple(out)
    return Splits(train=splits["train"], test=splits["test"], val=splits.get("val"),
                  info=_decode_info(manifest["info"], folder))
