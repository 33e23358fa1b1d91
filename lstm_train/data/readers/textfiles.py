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

import codecs
import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenizers import Regex, pre_tokenizers

from ...runfiles import Raw, shorten
from ...schema import ConfigError
from ..textio import declares_c1, warn_c1

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


def read_text(path: Path, encoding: str) -> str:
    """The whole file decoded (for small files only: tables and predict files stream through
    `read_lines`), or an error naming the line of the first undecodable byte."""
    return "".join(text for _, text in read_lines(path, encoding))


def _codec(encoding: str) -> str:
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        codecs.lookup(codec)
    except LookupError:
        raise TextDataError(f"data.encoding = {encoding!r}: not a text encoding Python knows") from None
    return codec


MAX_ROW_BYTES = 64 << 20  # a row of a table (CSV, TSV, JSON Lines): longer is not a text sample


def read_lines(path: Path, encoding: str = "utf-8", max_line: int | None = None,
               cut: list[tuple[int, int]] | None = None, refuse_over: int | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text with its newline) of a file, read as a stream: memory stays bounded by
    the longest line, or by `max_line` bytes where given (a longer line is cut there, the rest
    skipped unread into memory, and (line, its length in bytes) appended to `cut`), or by
    `refuse_over` bytes (a longer line is an error naming it, once that much is read).  Bytes
    that are not `encoding` raise an error naming the line and the byte offset."""
    path = Path(path).expanduser()
    codec = _codec(encoding)
    c1 = declares_c1(codec)  # cp1252 text declared latin-1: warned about once, naming the file
    decoder = codecs.getincrementaldecoder(codec)()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise TextDataError(f"{path}: cannot read ({e.strerror})") from None
    offset = 0
    with f:
        most = max_line if max_line is not None else refuse_over + 1 if refuse_over is not None else -1
        for number, raw in enumerate(iter(lambda: f.readline(most), b""), 1):
            size = len(raw)
            if refuse_over is not None and max_line is None and size > refuse_over:
                raise TextDataError(f"{path}:{number}: a line of more than {refuse_over >> 20} MiB without a line "
                                    "break: not a row of texts (is this the file you meant?)")
            if max_line is not None and size >= max_line and not raw.endswith(b"\n"):
                while (rest := f.readline(1 << 20)):  # skip the rest of this line, a MiB at a time
                    size += len(rest)
                    if rest.endswith(b"\n"):
                        break
                if cut is not None:
                    cut.append((number, size))
            try:
                text = decoder.decode(raw)
                if size > len(raw):  # cut: drop a character split at the cut, end the line
                    decoder.reset()
                    text += "\n"
            except UnicodeDecodeError as e:
                raise TextDataError(
                    f"{path}:{number}: not valid {encoding} (byte 0x{raw[e.start]:02x} at offset {offset + e.start}); "
                    "re-save the file as UTF-8 or set data.encoding (e.g. latin-1, cp1252)"
                ) from None
            offset += size
            if c1:
                warn_c1(path, encoding, number, text)
            yield number, text


def read_table(path: str | Path, text_column: str, label_column: str | None, fmt: str = "auto",
               encoding: str = "utf-8") -> Table:
    """Text and label of every row of a CSV / TSV / JSON Lines file (blank lines skipped);
    `label_column` None: texts only (`Table.labels` stays empty).  Read as a stream."""
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
    """The rows of a file one at a time, checked as `read_table` checks them (a file larger than
    memory can be prepared: see text_classify.stream_data); `columns` receives the header or the
    first object's keys."""
    path = Path(path).expanduser()
    columns = [] if columns is None else columns
    kind = file_format(path, fmt)
    if kind in ("parquet", "hf"):
        yield from _read_arrow(path, kind, text_column, label_column, columns)
        return
    lines = read_lines(path, encoding, refuse_over=MAX_ROW_BYTES)  # bounded before anything is parsed
    if kind == "jsonl":
        yield from _read_jsonl(path, lines, text_column, label_column, columns)
    else:
        yield from _read_delimited(path, (text for _, text in lines), "\t" if kind == "tsv" else ",", text_column,
                                   label_column, columns)


def _read_delimited(path: Path, content: Iterable[str], delimiter: str, text_column: str,
                    label_column: str | None, columns_out: list[str]) -> Iterator[Row]:
    reader = csv.reader(content, delimiter=delimiter, strict=True)
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
                    f"{path}:1: no column {name!r} ({key}); the header has: {listing(header)}"
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
                    f"({listing(header)}); quote a field that holds the delimiter {delimiter!r}"
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
            raise TextDataError(f"{path}: no column {name!r} ({key}); the columns are: {listing(list(names))}")
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
            yield _checked(path, text, None if label is None else label_text(label), row, text_column, label_column)


def listing(names: list[str], limit: int = 20, width: int = 40) -> str:
    """Names for an error message: at most `limit`, each cut to `width` characters (a CSV with
    100,000 columns or a 1 MB header cell must not make a 1 MB message)."""
    shown = [n if len(n) <= width else n[: width - 3] + "..." for n in names[:limit]]
    return ", ".join(shown) + (f", ... ({len(names):,} in all)" if len(names) > limit else "")


def label_text(label: Any) -> str:
    """A JSON label as its class name: one value, one class (1, 1.0 and "1" are all "1")."""
    if isinstance(label, bool):
        return str(label).lower()
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


def _read_jsonl(path: Path, content: Iterable[tuple[int, str]], text_column: str, label_column: str | None,
                columns_out: list[str]) -> Iterator[Row]:
    for line, raw in content:
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
                raise TextDataError(f"{path}:{line}: no key {name!r} (keys: {listing(list(record))}); set {key}")
        text = record[text_column]
        if not isinstance(text, str):
            raise TextDataError(f"{path}:{line}: {text_column!r} must be a string, found {shorten(Raw(json.dumps(text)))}")
        label = None
        if label_column is not None:
            label = record[label_column]
            if isinstance(label, (dict, list)) or label is None:
                raise TextDataError(
                    f"{path}:{line}: {label_column!r} must be a string or number, found {shorten(Raw(json.dumps(label)))}"
                )
            label = label_text(label)
        yield _checked(path, text, label, line, text_column, label_column)


def _checked(path: Path, text: str, label: str | None, line: int, text_column: str, label_column: str | None) -> Row:
    if not text.strip():
        raise TextDataError(f"{path}:{line}: empty text in column {text_column!r}")
    if label is not None:
        if not label.strip():
            raise TextDataError(f"{path}:{line}: empty label in column {label_column!r}")
        label = label.strip()
    return text, label, line


TRAIN, VAL, TEST = 0, 1, 2


def content_split(texts: list[str], labels: list[str | None], val_fraction: float, test_fraction: float,
                  seed: int) -> Any:
    """The split (TRAIN, VAL or TEST, int8) of each row of a file cut by fraction: a seeded blake2b
    hash of the row's text and label mapped to [0, 1).  A rule of the row alone: no row count nor
    index, so the same from any grouping of rows into pieces or shards, and duplicates always
    land in the same split (no train/test leak)."""
    import hashlib

    import numpy as np

    key = int(seed or 0).to_bytes(8, "little", signed=True)
    u = np.fromiter((int.from_bytes(hashlib.blake2b(f"{t}\0{lab}".encode("utf-8", "surrogatepass"), digest_size=8,
                                                    key=key).digest(), "little") for t, lab in zip(texts, labels)),
                    dtype=np.uint64, count=len(texts))
    return split_of_hashes(u, val_fraction, test_fraction)


def split_of_hashes(u: Any, val_fraction: float, test_fraction: float) -> Any:
    """TRAIN / VAL / TEST (int8) of rows whose 64-bit hashes are `u` (uint64): the hash mapped to
    [0, 1) and compared with the fractions (shared by `content_split` and the column path)."""
    import numpy as np

    x = (np.asarray(u, np.uint64) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    test, val = float(test_fraction or 0), float(val_fraction or 0)
    return np.where(x < test, TEST, np.where(x < test + val, VAL, TRAIN)).astype(np.int8)


def check_split_sizes(path: str, n: int, sizes: list[int], val_fraction: float, test_fraction: float) -> None:
    """Train and test (and val, when data.val_fraction asks for it) must each have rows."""
    train, val, test = sizes
    if not train or not test or (val_fraction and not val):
        raise TextDataError(
            f"{path}: {n} samples cannot be split into train / val ({val_fraction}) / test ({test_fraction}) "
            f"(train {train}, val {val}, test {test}); change data.val_fraction / data.test_fraction or give more rows"
        )


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
                f"{table.path}:{line}: label {shorten(label)} does not occur in the training data "
                f"({train_path}); known labels: {listing(classes)}"
            )
        ids.append(index[label])
    return ids


# predict reads at most this much of one line: far more words than any data.max_length keeps.
PREDICT_LINE_BYTES = 1 << 20
# ... and echoes at most this much of a text it cut.
ECHO_CHARS = 200


def read_prediction_lines(path: Path, encoding: str) -> list[str]:
    """The lines of a plain-text predict --file, streamed; a line over PREDICT_LINE_BYTES is cut
    there (the rest is skipped, never held in memory) and stderr says which and by how much."""
    import sys

    cut: list[tuple[int, int]] = []
    lines = [text.rstrip("\n") for _, text in read_lines(path, encoding, PREDICT_LINE_BYTES, cut)]
    for number, size in cut[:5]:
        print(f"{path}:{number}: a line of {size:,} bytes; read its first {PREDICT_LINE_BYTES:,} only",
              file=sys.stderr)
    if len(cut) > 5:
        print(f"{path}: {len(cut):,} lines over {PREDICT_LINE_BYTES:,} bytes in all", file=sys.stderr)
    return lines


def cut_for_prediction(ids: list[list[int]], texts: list[str], limit: int | None) -> tuple[list[list[int]], list[str]]:
    """Token ids cut to the job's data.max_length (as in training), the echoed texts of those cut
    shortened; stderr says how many were cut and by how much."""
    if not limit:
        return ids, texts
    long = [i for i, s in enumerate(ids) if len(s) > limit]
    if not long:
        return ids, texts
    import sys

    longest = max(len(ids[i]) for i in long)
    print(f"predict: cut {len(long):,} of {len(ids):,} texts to data.max_length={limit} words "
          f"(the longest had {longest:,}, {longest - limit:,} words left out)", file=sys.stderr)
    texts = list(texts)
    for i in long:
        if len(texts[i]) > ECHO_CHARS:
            texts[i] = texts[i][:ECHO_CHARS] + f"... ({len(texts[i]):,} characters)"
    return [s[:limit] for s in ids], texts
