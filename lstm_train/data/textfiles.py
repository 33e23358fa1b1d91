"""A user's own labelled text: CSV, TSV or JSON Lines files, and splitting text into words.

One row (or JSON object) per sample, with a text column and a label column whose
names the job gives (`data.text_column`, `data.label_column`).  Every problem is
reported with the file, the line and the column:

    reviews.csv:14: 3 fields, but the header has 2 (text, label); quote a text that holds a comma
    reviews.csv:20: empty text in column 'text'
    reviews.jsonl:3: no key 'label' (keys: review, stars); set data.label_column

Texts are split into words with a Hugging Face `tokenizers` pre-tokenizer
(`split_words`), the same rule at training and `predict` time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from tokenizers import Regex, pre_tokenizers

from ..schema import ConfigError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}

# `words`: English-style words as in the Penn Treebank (and so SST): punctuation apart,
# clitics split off ("don't" -> do n't, "it's" -> it 's), hyphenated and dotted words kept.
_WORDS = r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-./]\w+)*|\.{2,}|-{2,}|[^\w\s]"


class TextDataError(ConfigError):
    """A text file that cannot be used as given: wrong encoding, missing column, ragged row, empty text..."""


@dataclass
class Table:
    """The text and label of every sample of a file, with the line each starts on (for messages)."""

    path: str
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # the header (CSV/TSV) or the first object's keys (JSONL)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int]) -> Table:
        return Table(self.path, [self.texts[i] for i in indices], [self.labels[i] for i in indices if self.labels],
                     [self.lines[i] for i in indices])


def file_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()):
        return "hf"
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise TextDataError(
            f"{path}: cannot tell the format from the name; use a .csv, .tsv, .jsonl or .parquet file, a "
            "Hugging Face datasets save_to_disk directory, or set data.format"
        )
    return found


def read_table(path: str | Path, text_column: str, label_column: str | None, fmt: str = "auto",
               encoding: str = "utf-8") -> Table:
    """Text and label of every row of a CSV / TSV / JSON Lines file (blank lines skipped);
    `label_column` None: texts only (`Table.labels` stays empty)."""
    path = Path(path).expanduser()
    table = Table(str(path))
    for text, label, line in iter_rows(path, text_column, label_column, fmt, encoding, table.columns):
        if label is not None:
            table.labels.append(label)
        table.texts.append(text)
        table.lines.append(line)
    if not table.texts:
        raise TextDataError(f"{path}: no samples (an empty {'table' if file_format(path, fmt) in ('parquet', 'hf') else 'file'}?)")
    return table


Row = tuple[str, "str | None", int]  # text, label (stripped; None without a label column), line or row number


def iter_rows(path: str | Path, text_column: str, label_column: str | None, fmt: str = "auto",
              encoding: str = "utf-8", columns: list[str] | None = None) -> Iterator[Row]:
    """The rows of a file one at a time, checked as `read_table` checks them, read incrementally
    (a file larger than memory can be prepared); `columns` receives the header or first keys."""
    path = Path(path).expanduser()
    columns = [] if columns is None else columns
    kind = file_format(path, fmt)
    if kind in ("parquet", "hf"):
        yield from _read_arrow(path, kind, text_column, label_column, columns)
        return
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        "".encode(codec)
    except LookupError:
        raise TextDataError(f"data.encoding = {encoding!r}: not a text encoding Python knows") from None
    try:
        with open(path, "rb") as f:
            lines = _decoded_lines(path, f, codec, encoding)
            if kind == "jsonl":
                yield from _read_jsonl(path, lines, text_column, label_column, columns)
            else:
                yield from _read_delimited(path, lines, "\t" if kind == "tsv" else ",", text_column, label_column,
                                           columns)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TextDataError(f"{path}: cannot read (Is a directory)") from None
    except PermissionError as e:
        raise TextDataError(f"{path}: cannot read ({e.strerror})") from None


def _decoded_lines(path: Path, f: BinaryIO, codec: str, encoding: str) -> Iterator[str]:
    """The file's lines (split at b"\\n", ends kept), decoded one at a time: an undecodable byte
    is named with its line and offset, and memory stays one line whatever the file's size."""
    offset = 0
    for line, data in enumerate(f, 1):
        try:
            yield data.decode(codec if line == 1 else codec.removesuffix("-sig"))
        except UnicodeDecodeError as e:
            raise TextDataError(
                f"{path}:{line}: not valid {encoding} (byte 0x{data[e.start]:02x} at offset {offset + e.start}); "
                "re-save the file as UTF-8 or set data.encoding (e.g. latin-1, cp1252)"
            ) from None
        offset += len(data)


def _read_delimited(path: Path, lines: Iterator[str], delimiter: str, text_column: str, label_column: str | None,
                    columns_out: list[str]) -> Iterator[Row]:
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise TextDataError(f"{path}: empty file; the first line must name the columns")
        header = [h.strip() for h in header]
        columns_out[:] = header
        columns = {}
        for key, name in (("data.text_column", text_column), ("data.label_column", label_column)):
            if name is None:
                continue
            if name not in header:
                raise TextDataError(
                    f"{path}:1: no column {name!r} ({key}); the header has: {', '.join(header)}"
                )
            columns[key] = header.index(name)
        text_at, label_at = columns["data.text_column"], columns.get("data.label_column")
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise TextDataError(
                    f"{path}:{line}: {len(row)} fields, but the header has {len(header)} "
                    f"({', '.join(header)}); quote a field that holds the delimiter {delimiter!r}"
                )
            yield _checked(path, row[text_at], None if label_at is None else row[label_at], line, text_column,
                           label_column)
    except csv.Error as e:
        raise TextDataError(f"{path}:{reader.line_num}: not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from None


def _read_arrow(path: Path, kind: str, text_column: str, label_column: str | None,
                columns_out: list[str]) -> Iterator[Row]:
    """A Parquet file or a Hugging Face `datasets` directory (`save_to_disk`), by column name,
    read through Arrow one record batch at a time."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            source = pq.ParquetFile(path)
        except Exception as e:  # pyarrow's errors for a damaged or non-Parquet file
            raise TextDataError(f"{path}: not a readable Parquet file ({e})") from None
        names = source.schema_arrow.names
        batches = lambda columns: source.iter_batches(batch_size=65536, columns=columns)  # noqa: E731
    else:
        import datasets

        try:
            found = datasets.load_from_disk(str(path))
        except Exception as e:
            raise TextDataError(f"{path}: not a Hugging Face datasets directory saved with save_to_disk ({e})") from None
        if isinstance(found, datasets.DatasetDict):
            raise TextDataError(f"{path}: a DatasetDict with splits {', '.join(found)}; point data.path / "
                                f"data.train_path etc. at one split's folder ({path}/{next(iter(found))})")
        names = found.column_names
        batches = lambda columns: found.data.table.select(columns).to_batches(max_chunksize=65536)  # noqa: E731
    for key, name in (("data.text_column", text_column), ("data.label_column", label_column)):
        if name is not None and name not in names:
            raise TextDataError(f"{path}: no column {name!r} ({key}); the columns are: {', '.join(names)}")
    columns_out[:] = list(names)
    wanted = [text_column] + ([label_column] if label_column is not None else [])
    row = 0
    for batch in batches(wanted):
        texts = batch.column(0).to_pylist()
        labels = batch.column(1).to_pylist() if label_column is not None else [None] * len(texts)
        for text, label in zip(texts, labels):
            row += 1
            if not isinstance(text, str):
                raise TextDataError(f"{path}: row {row}: {text_column!r} must be a string, found {text!r}")
            if label_column is not None and (label is None or isinstance(label, (dict, list))):
                raise TextDataError(f"{path}: row {row}: {label_column!r} must be a string or number, found {label!r}")
            if isinstance(label, bool):
                label = str(label).lower()
            yield _checked(path, text, None if label is None else str(label), row, text_column, label_column)


def _read_jsonl(path: Path, lines: Iterator[str], text_column: str, label_column: str | None,
                columns_out: list[str]) -> Iterator[Row]:
    for line, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise TextDataError(f"{path}:{line}: not a JSON object ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise TextDataError(f"{path}:{line}: one JSON object per line expected, found {type(record).__name__}")
        if not columns_out:
            columns_out[:] = list(record)
        for key, name in (("data.text_column", text_column), ("data.label_column", label_column)):
            if name is not None and name not in record:
                raise TextDataError(f"{path}:{line}: no key {name!r} (keys: {', '.join(record)}); set {key}")
        text = record[text_column]
        if not isinstance(text, str):
            raise TextDataError(f"{path}:{line}: {text_column!r} must be a string, found {json.dumps(text)}")
        label = None
        if label_column is not None:
            label = record[label_column]
            if isinstance(label, (dict, list)) or label is None:
                raise TextDataError(
                    f"{path}:{line}: {label_column!r} must be a string or number, found {json.dumps(label)}"
                )
            label = str(label).lower() if isinstance(label, bool) else str(label)
        yield _checked(path, text, label, line, text_column, label_column)


def _checked(path: Path, text: str, label: str | None, line: int, text_column: str, label_column: str | None) -> Row:
    if not text.strip():
        raise TextDataError(f"{path}:{line}: empty text in column {text_column!r}")
    if label is not None:
        if not label.strip():
            raise TextDataError(f"{path}:{line}: empty label in column {label_column!r}")
        label = label.strip()
    return text, label, line


def split_by_fraction(table: Table, val_fraction: float, test_fraction: float,
                      seed: int) -> tuple[Table, Table | None, Table]:
    """One file cut into train / val / test at random (seeded), fractions of its rows."""
    assigned = fraction_assignment(len(table), table.path, val_fraction, test_fraction, seed)
    parts = [(assigned == k).nonzero()[0].tolist() for k in (TRAIN, VAL, TEST)]
    return table.subset(parts[0]), table.subset(parts[1]) if parts[1] else None, table.subset(parts[2])


TRAIN, VAL, TEST = 0, 1, 2


def fraction_assignment(n: int, path: str, val_fraction: float, test_fraction: float, seed: int) -> Any:
    """The split (TRAIN, VAL or TEST) of each of a file's `n` rows: an int8 array, so a streamed
    preparation that knows only the row count cuts exactly as `split_by_fraction` does."""
    import numpy as np

    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n_test < 1 or n - n_test - n_val < 1:
        raise TextDataError(
            f"{path}: {n} samples cannot be split into train / val ({val_fraction}) / test ({test_fraction}); "
            "change data.val_fraction / data.test_fraction or give more rows"
        )
    order = np.random.default_rng(seed).permutation(n)
    assigned = np.full(n, TRAIN, dtype=np.int8)
    assigned[order[:n_test]] = TEST
    assigned[order[n_test : n_test + n_val]] = VAL
    return assigned


def word_splitter(rule: Literal["words", "whitespace"]) -> pre_tokenizers.PreTokenizer:
    if rule == "whitespace":
        return pre_tokenizers.WhitespaceSplit()
    return pre_tokenizers.Split(Regex(_WORDS), behavior="isolated")


def split_words(texts: list[str], rule: Literal["words", "whitespace"] = "words") -> list[list[str]]:
    """Each text as a list of words (Hugging Face pre-tokenizer, in Rust)."""
    splitter = word_splitter(rule)
    out = []
    for text in texts:
        out.append([w for w, _ in splitter.pre_tokenize_str(text) if w.strip()])
    return out


def label_classes(labels: list[str]) -> list[str]:
    """The classes a training set has, in a stable order: numerically when every label is a number."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def label_ids(table: Table, classes: list[str], train_path: str) -> list[int]:
    """Class index of every label; a label the training data never had is an error naming its line."""
    index = {c: i for i, c in enumerate(classes)}
    ids = []
    for label, line in zip(table.labels, table.lines):
        if label not in index:
            raise TextDataError(
                f"{table.path}:{line}: label {label!r} does not occur in the training data "
                f"({train_path}); known labels: {', '.join(classes)}"
            )
        ids.append(index[label])
    return ids
