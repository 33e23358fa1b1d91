"""Numeric sequences from a user's files: each sample a [steps, features] array and a label.

Formats (by suffix, or `data.format`):
* CSV / TSV / Parquet, *long*: one row a step, `data.id_column` names the sequence it
  belongs to (its steps in file order, or sorted by `data.time_column`); every other
  numeric column is a feature (or `data.feature_columns`); the label is constant per id.
* CSV / TSV / Parquet, *wide*: one row a sequence (no id column): every column but the
  label is a step of one feature, a shorter sequence ending in empty cells; in Parquet a
  column of lists is a feature, one list a sequence.
* `.npz`: `x` [N, steps] or [N, steps, features] (NaN after a sequence's end, or a
  `lengths` [N] array) and `y` [N].  A pair of `.npy` files [x.npy, y.npy] is the same.
* `.ts`: the UCR/UEA archive's format (sktime's and aeon's), multivariate and of any length.

Read with pyarrow (CSV, Parquet) and numpy; nothing here imports torch.  Every problem is a
`SequenceDataError` naming the file and, where there is one, the line, column or id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..schema import ConfigError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz",
           ".npy": "npy", ".ts": "ts"}


class SequenceDataError(ConfigError):
    """A sequence file that cannot be used as given: the message names the file and what is wrong."""


@dataclass
class Columns:
    """Which columns of a table are what (long format when `id` is set)."""

    label: str | None = "label"
    id: str | None = None
    time: str | None = None
    features: list[str] | None = None


@dataclass
class Sequences:
    """Samples read from files: `x[i]` float64 [steps, features]; `y[i]` the label as read
    (a string for classes, a number for values) or None when the files have no labels."""

    x: list[np.ndarray]
    y: list[Any] | None
    features: list[str]
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


def file_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise SequenceDataError(f"{path}: unknown kind of file {path.suffix!r}; use CSV/TSV, Parquet, .npz, a pair of "
                                ".npy files or .ts (or set data.format)")
    return kind


def read(spec: str | list[str], columns: Columns, fmt: str = "auto", labelled: bool = True) -> Sequences:
    """The sequences of one split's file (or [x.npy, y.npy]); `labelled`: a label is required."""
    paths = [Path(p).expanduser() for p in ([spec] if isinstance(spec, str) else spec)]
    for path in paths:
        if not path.is_file():
            raise SequenceDataError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    kind = file_format(paths[0], fmt)
    if kind == "npy" or len(paths) > 1:
        out = _read_npy(paths, labelled)
    elif kind == "npz":
        out = _read_npz(paths[0], labelled)
    elif kind == "ts":
        out = read_ts(paths[0])
    else:
        out = _read_table(paths[0], kind, columns, labelled)
    if not out.x:
        raise SequenceDataError(f"{paths[0]}: no sequences")
    empty = [i for i, x in enumerate(out.x) if len(x) == 0]
    if empty:
        raise SequenceDataError(f"{paths[0]}: sequence number {empty[0] + 1} has no steps")
    return out


# ---------------------------------------------------------------------------
# Arrays


def _from_array(x: np.ndarray, lengths: np.ndarray | None, path: Path) -> list[np.ndarray]:
    """[N, T] or [N, T, F] (NaN after each end, or `lengths`) -> one [T_i, F] array per sample."""
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise SequenceDataError(f"{path}: x must be numbers of shape [samples, steps] or [samples, steps, features], "
                                f"not {x.dtype} {list(x.shape)}")
    x = x.astype(np.float64)
    if lengths is None:  # a step is real unless all its features are NaN: the archive's padding
        real = ~np.isnan(x).all(axis=2)
        lengths = np.where(real.any(1), x.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)
    elif len(lengths) != len(x) or (np.asarray(lengths) > x.shape[1]).any():
        raise SequenceDataError(f"{path}: lengths must be {len(x)} numbers of at most {x.shape[1]}")
    return [x[i, : int(n)] for i, n in enumerate(lengths)]


def _labels(y: Any, n: int, path: Path, labelled: bool) -> list[Any] | None:
    if y is None:
        if labelled:
            raise SequenceDataError(f"{path}: no labels (an array y)")
        return None
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise SequenceDataError(f"{path}: {len(y)} labels for {n} sequences")
    return [v.item() if hasattr(v, "item") else v for v in y]


def _read_npz(path: Path, labelled: bool) -> Sequences:
    from .readers.npyfiles import NpyFileError, load_npz

    try:
        arrays = load_npz(path)  # no pickles, nothing allocated beyond what the file can hold
    except NpyFileError as e:
        raise SequenceDataError(str(e)) from None
    if "x" not in arrays:
        raise SequenceDataError(f"{path}: no array named x (has {', '.join(arrays) or 'none'})")
    x = _from_array(arrays["x"], arrays.get("lengths"), path)
    y = _labels(arrays.get("y"), len(x), path, labelled)
    return Sequences(x, y, [f"x{i}" for i in range(x[0].shape[1])] if x else [], str(path))


def _read_npy(paths: list[Path], labelled: bool) -> Sequences:
    if len(paths) > 2:
        raise SequenceDataError(f"{paths[0]}: give one file, or [x.npy, y.npy]")
    from .readers.npyfiles import NpyFileError, load_npy

    try:
        x = _from_array(load_npy(paths[0]), None, paths[0])  # the header's claim checked against the file
        y = load_npy(paths[1]) if len(paths) == 2 else None
    except NpyFileError as e:
        raise SequenceDataError(str(e)) from None
    except (ValueError, OSError) as e:
        raise SequenceDataError(f"{paths[0]}: not a readable .npy ({e})") from None
    return Sequences(x, _labels(y, len(x), paths[-1], labelled), [f"x{i}" for i in range(x[0].shape[1])], str(paths[0]))


# ---------------------------------------------------------------------------
# Tables (CSV, TSV, Parquet)


def _table(path: Path, kind: str) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            return pq.read_table(path)
        options = pacsv.ParseOptions(delimiter="\t" if kind == "tsv" else ",")
        return pacsv.read_csv(path, parse_options=options)
    except (pa.ArrowInvalid, OSError) as e:
        raise SequenceDataError(f"{path}: not a readable {kind} file ({str(e).splitlines()[0]})") from None


def _column(table: Any, name: str, path: Path, what: str) -> np.ndarray:
    if name not in table.column_names:
        raise SequenceDataError(f"{path}: no column {name!r} ({what}); columns: {', '.join(table.column_names)}")
    return table.column(name).to_numpy(zero_copy_only=False)


def _numeric(table: Any, names: list[str], path: Path) -> np.ndarray:
    """[rows, len(names)] float64; a text column or a non-number cell is an error naming it."""
    import pyarrow as pa

    out = np.empty((table.num_rows, len(names)))
    for j, name in enumerate(names):
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_null(column.type)):
            raise SequenceDataError(f"{path}: column {name!r} is not numbers ({column.type}); name the feature "
                                    "columns (data.feature_columns) or the label (data.label_column)")
        out[:, j] = column.to_numpy(zero_copy_only=False).astype(np.float64) if len(column) else 0
    return out


def _read_table(path: Path, kind: str, columns: Columns, labelled: bool) -> Sequences:
    table = _table(path, kind)
    label = columns.label if columns.label in table.column_names or labelled else None
    if labelled and columns.label is None:
        raise SequenceDataError(f"{path}: data.label_column is not set")
    taken = {columns.label if label else None, columns.id, columns.time} - {None}
    names = columns.features or [c for c in table.column_names if c not in taken]
    missing = [c for c in names if c not in table.column_names]
    if missing:
        raise SequenceDataError(f"{path}: no column {missing[0]!r}; columns: {', '.join(table.column_names)}")
    if columns.id is not None:
        return _long(table, path, columns, names, label)
    return _wide(table, path, names, label)


def _long(table: Any, path: Path, columns: Columns, names: list[str], label: str | None) -> Sequences:
    """One row a step: rows grouped by id (in order of first appearance), steps in file order or by time."""
    ids = _column(table, columns.id, path, "data.id_column")
    _, first, group = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))[group.reshape(-1)]  # group number by first appearance
    keys = [np.arange(len(ids))]  # np.lexsort: the last key sorts first
    if columns.time is not None:
        keys.append(_numeric(table, [columns.time], path)[:, 0])
    order = np.lexsort([*keys, rank])  # by group, then time (if any), then file order
    values = _numeric(table, names, path)[order]
    counts = np.bincount(rank, minlength=len(first))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    x = np.split(values, starts[1:])
    y = None
    if label is not None:
        labels = _column(table, label, path, "data.label_column")[order]
        group_label = np.repeat(labels[starts], counts)
        bad = np.flatnonzero(group_label != labels)
        if len(bad):
            where = ids[order][bad[0]]
            raise SequenceDataError(f"{path}: sequence {where!r} has more than one label in {label!r} "
                                    f"({labels[bad[0]]!r} and {group_label[bad[0]]!r}); a label is per sequence")
        y = [v.item() if hasattr(v, "item") else v for v in labels[starts]]
    return Sequences(x, y, names, str(path), {"ids": [str(ids[order][s]) for s in starts]})


def _wide(table: Any, path: Path, names: list[str], label: str | None) -> Sequences:
    """One row a sequence: the columns are its steps (one feature; trailing empty cells end it), or
    in Parquet, columns of lists are its features."""
    import pyarrow as pa

    lists = [n for n in names if pa.types.is_list(table.column(n).type) or pa.types.is_large_list(table.column(n).type)]
    if lists:
        x = _list_columns(table, path, lists)
        features = lists
    else:
        values = _numeric(table, names, path)
        x = [row[: _real_length(row)][:, None] for row in values]
        features = ["value"]
    y = None
    if label is not None:
        y = [v.item() if hasattr(v, "item") else v for v in _column(table, label, path, "data.label_column")]
    return Sequences(x, y, features, str(path))


def _real_length(row: np.ndarray) -> int:
    real = np.flatnonzero(~np.isnan(row))
    return int(real[-1]) + 1 if len(real) else 0


def _list_columns(table: Any, path: Path, names: list[str]) -> list[np.ndarray]:
    per_feature = [table.column(n).to_pylist() for n in names]
    x = []
    for i, steps in enumerate(zip(*per_feature)):
        if len({len(s or ()) for s in steps}) > 1:
            raise SequenceDataError(f"{path}: row {i + 1}: its features ({', '.join(names)}) have different lengths")
        x.append(np.array(list(zip(*steps)), dtype=np.float64).reshape(-1, len(names)))
    return x


# ---------------------------------------------------------------------------
# The UCR/UEA archive's .ts files


def read_ts(path: Path) -> Sequences:
    """A `.ts` file: `#` comments, `@` headers, then one case a line, its dimensions separated by
    `:` (each comma-separated values, `?` missing) and the class label (or target value) last."""
    header: dict[str, str] = {}
    x: list[np.ndarray] = []
    y: list[Any] = []
    data = False
    with open(path, encoding="utf-8", errors="strict") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not data:
                key, _, value = line.partition(" ")
                header[key.lower()] = value.strip()
                data = key.lower() == "@data"
                continue
            *dims, label = line.split(":")
            try:
                steps = [np.array([np.nan if v == "?" else float(v) for v in d.split(",")]) for d in dims]
            except ValueError as e:
                raise SequenceDataError(f"{path}:{lineno}: not a number ({e})") from None
            if len({len(s) for s in steps}) != 1:
                raise SequenceDataError(f"{path}:{lineno}: its dimensions have different lengths")
            x.append(np.stack(steps, axis=1))
            y.append(label.strip())
    if not data:
        raise SequenceDataError(f"{path}: no @data line: not a .ts file")
    regression = header.get("@targetlabel", "").startswith("true")
    y = [float(v) for v in y] if regression else y
    return Sequences(x, y, [f"dim{i}" for i in range(x[0].shape[1])] if x else [], str(path),
                     {"problem": header.get("@problemname"), "regression": regression})


def archive_folder(archive: str | None) -> Path:
    """Where the UCR/UEA archive's `<Name>/<Name>_TRAIN.ts` folders are: `archive`, or the
    copy of some of them that sktime's package ships (found without importing sktime)."""
    if archive:
        return Path(archive).expanduser()
    import importlib.util

    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise SequenceDataError("data.dataset: the UCR/UEA archive files come with the sktime package "
                                "(pip install --no-deps sktime: its data only is read), or set data.archive to a "
                                "folder of <Name>/<Name>_TRAIN.ts and _TEST.ts")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def archive_files(name: str, archive: str | None) -> tuple[Path, Path]:
    folder = archive_folder(archive) / name
    train, test = folder / f"{name}_TRAIN.ts", folder / f"{name}_TEST.ts"
    if not train.is_file() or not test.is_file():
        here = sorted(p.name for p in folder.parent.iterdir() if (p / f"{p.name}_TRAIN.ts").is_file()) \
            if folder.parent.is_dir() else []
        raise SequenceDataError(f"data.dataset = {name!r}: no {train.name} and {test.name} in {folder}; "
                                f"datasets there: {', '.join(here) or 'none'}")
    return train, test
