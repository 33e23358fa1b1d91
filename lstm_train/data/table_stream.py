"""text_classify's preparation as a `Stream` (see stream.py): CSV/TSV/JSONL/Parquet/datasets and SST.

Pieces are byte ranges of ~PIECE_BYTES cut on line boundaries (a fixed size, so the cut
never depends on the shard count); a CSV/TSV is only cut at a newline outside quotes (an
even count of `"` before it: RFC 4180 doubles a quote inside a quoted field), so a quoted
field holding newlines is never split.  The header is read once per piece from the file's
first line.  Parquet files, `datasets` folders and SST tree files are one piece each.

When one file is cut by fraction (`data.path`), a row's split is a rule of the row alone:
a seeded blake2b hash of its text and label mapped to [0, 1) and compared with the
fractions.  It needs no row count nor row index, is the same from 1 shard or N, and
sends duplicates to the same split (no train/test leak).

Pass 1 (`scan`) counts the training rows' words and labels; `plan` merges them into the
vocabulary (`Vocab.from_counts`: the JSON and digest `Vocab.train` gives) and the classes;
pass 2 (`encode`) tokenizes chunk by chunk through `tokenizers`' batch path.

Files (not SST) take the column path first (table_columns.py: pyarrow's CSV reader, the word
rule as RE2 kernels, ids by dictionary encoding); this module's Python path is the reference
it is tested against and the fallback wherever it cannot be exact (`COLUMNS = False`: this
path alone).
"""

from __future__ import annotations

import codecs
import csv
import re
import functools
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import sst, table_columns, textfiles
from .table_columns import SPLIT_NAMES, _safe_newline
from .chunked import EntryWriter
from .stream import Piece
from .textfiles import TEST, TRAIN, VAL, TextDataError  # noqa: F401 (SPLIT_NAMES)
from .vocab import SPECIALS, UNK, Vocab, normalize_counts
from ..messages import note

PIECE_BYTES = 32 << 20  # a piece's size: fixed, so pieces never depend on the shard count
COLUMNS = True  # the Arrow column path (table_columns.py) wherever it is exact; False: the Python path only
BLOCK_BYTES = 4 << 20  # read and decoded at a time inside a piece
CHUNK_ROWS = 8192  # rows tokenized and written at a time
FIELDS = ("source", "path", "train_path", "val_path", "test_path", "text_column", "label_column", "format",
          "encoding", "val_fraction", "test_fraction", "split_seed", "tokenizer", "lowercase", "min_freq",
          "max_vocab", "max_length", "root", "phrases", "train_labels")


def cut_points(path: Path, size: int, quoted: bool, block: int = 1 << 20) -> list[int]:
    """Offsets just after a newline, about every `size` bytes; with `quoted`, only newlines
    with an even number of quotes before them (outside a quoted field).  One read of the file,
    a block at a time (bytes.count: memchr speed)."""
    cuts, quotes, offset, target = [], 0, 0, size
    with open(path, "rb") as f:
        while raw := f.read(block):
            end = offset + len(raw)
            while target < end:
                start = max(target - offset, 0)
                at = _safe_newline(raw, start, quotes + (raw.count(b'"', 0, start) if quoted else 0), quoted)
                if at is None:
                    break
                cuts.append(offset + at + 1)
                target = offset + at + 1 + size
            if quoted:
                quotes += raw.count(b'"')
            offset = end
    return cuts


def range_lines(path: Path, start: int, end: int | None, encoding: str) -> Iterator[str]:
    """The lines of bytes [start, end) of a file, decoded a block at a time; bytes that are not
    `encoding` raise an error naming the file, its line and the byte offset in the file."""
    codec = textfiles._codec(encoding) if start == 0 else encoding
    with open(path, "rb") as f:
        f.seek(start)
        offset, left, carry = start, (None if end is None else end - start), b""
        while True:
            raw = f.read(BLOCK_BYTES if left is None else min(BLOCK_BYTES, left))
            if left is not None:
                left -= len(raw)
            data = carry + raw
            cut = len(data) if not raw else data.rfind(b"\n") + 1
            if not data:
                return
            if cut == 0:
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            try:
                text = codecs.decode(block, codec)
            except UnicodeDecodeError as e:
                where = offset + e.start
                raise TextDataError(f"{path}:{_line_at(path, where)}: not valid {encoding} (byte 0x{block[e.start]:02x} "
                                    f"at offset {where}); re-save the file as UTF-8 or set data.encoding") from None
            codec = encoding if codec == "utf-8-sig" else codec
            offset += cut
            yield from text.splitlines(keepends=True)
            if not raw:
                return


def _line_at(path: Path, offset: int) -> int:
    """The line number of a byte offset (only on an error: one more read of the file's start)."""
    lines, done = 1, 0
    with open(path, "rb") as f:
        while done < offset and (raw := f.read(min(1 << 20, offset - done))):
            lines += raw.count(b"\n")
            done += len(raw)
    return lines


def _renumber(error: TextDataError, path: Path, start: int, header_lines: int) -> TextDataError:
    """An error raised on a piece's lines (numbered from the header) renumbered as lines of the file."""
    if start == 0:
        return error
    base = _line_at(path, start) - 1 - header_lines
    message = re.sub(rf"^{re.escape(str(path))}:(\d+):", lambda m: f"{path}:{int(m.group(1)) + base}:", str(error))
    return TextDataError(message)


class TextStream:
    """text_classify's Stream: built from the job's data section (plain values: picklable)."""

    def __init__(self, data: Any) -> None:
        self.d = {k: getattr(data, k, None) for k in FIELDS}

    # ------------------------------------------------------------------ pieces

    def _sources(self) -> list[tuple[str | None, Path]]:
        d = self.d
        if d["source"] != "files":
            folder = Path(d["root"]).expanduser() / "SST" / "trees"
            return [(s, folder / f"{n}.txt") for s, n in (("train", "train"), ("val", "dev"), ("test", "test"))]
        if d["path"]:
            return [(None, Path(d["path"]).expanduser())]
        named = [("train", d["train_path"]), ("val", d["val_path"]), ("test", d["test_path"])]
        return [(s, Path(p).expanduser()) for s, p in named if p]

    def pieces(self) -> list[Piece]:
        if COLUMNS and self.d["source"] == "files":  # imported once here, before the store forks its workers
            import pyarrow.compute  # noqa: F401
            import pyarrow.csv  # noqa: F401
        out: list[Piece] = []
        for split, path in self._sources():
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file")
            kind = "sst" if self.d["source"] != "files" else textfiles.file_format(path, self.d["format"])
            starts = [0]
            if kind in ("csv", "tsv", "jsonl"):
                starts += [c for c in cut_points(path, PIECE_BYTES, kind != "jsonl") if c < path.stat().st_size]
            ends: list[int | None] = [*starts[1:], None]
            out += [Piece(len(out) + i, str(path), s, e, split) for i, (s, e) in enumerate(zip(starts, ends))]
        return out

    # ------------------------------------------------------------------ rows

    def _header(self, path: Path, kind: str) -> list[str]:
        """The CSV/TSV header (the file's first record), read again by every piece."""
        lines = range_lines(path, 0, None, self.d["encoding"])
        reader = csv.reader(lines, delimiter="\t" if kind == "tsv" else ",", strict=True)
        return next(reader, None) or []

    def rows(self, piece: Piece) -> Iterator[textfiles.Row]:
        """The piece's rows (text, label, line), checked as `textfiles.iter_rows` checks them."""
        d, path = self.d, Path(piece.path)
        kind = textfiles.file_format(path, d["format"])
        if kind in ("parquet", "hf"):
            yield from textfiles.iter_rows(path, d["text_column"], d["label_column"], kind, d["encoding"])
            return
        lines: Iterator[str] = range_lines(path, piece.start, piece.end, d["encoding"])
        header_lines = 0
        if kind != "jsonl" and piece.start > 0:
            header = self._header(path, kind)
            delimiter, header_lines = ("\t" if kind == "tsv" else ","), 1
            lines = _chain([delimiter.join('"' + h.replace('"', '""') + '"' for h in header) + "\n"], lines)
        try:
            if kind == "jsonl":
                numbered = ((i, t) for i, t in enumerate(lines, 1))
                yield from textfiles._read_jsonl(path, numbered, d["text_column"], d["label_column"], [])
            else:
                yield from textfiles._read_delimited(path, lines, "\t" if kind == "tsv" else ",", d["text_column"],
                                                     d["label_column"], [])
        except TextDataError as e:
            raise _renumber(e, path, piece.start, header_lines if kind != "jsonl" else 0) from None

    def split_of(self, texts: list[str], labels: list[str | None]) -> np.ndarray:
        """TRAIN / VAL / TEST of each row of a file cut by fraction: a seeded hash of its content."""
        d = self.d
        return textfiles.content_split(texts, labels, d["val_fraction"], d["test_fraction"], d["split_seed"])

    def chunks(self, piece: Piece) -> Iterator[tuple[str, list[list[str]] | list[str], list[Any], list[int]]]:
        """(split, texts, labels, lines) a chunk at a time: SST gives word lists, files give texts."""
        if self.d["source"] != "files":
            yield from self._sst_chunks(piece)
            return
        from .chunked import chunks

        for chunk in chunks(self.rows(piece), CHUNK_ROWS):
            texts, labels, lines = [r[0] for r in chunk], [r[1] for r in chunk], [r[2] for r in chunk]
            if piece.split is not None:
                yield piece.split, texts, labels, lines
                continue
            assigned = self.split_of(texts, labels)
            for kind, name in SPLIT_NAMES.items():
                keep = np.flatnonzero(assigned == kind).tolist()
                if keep:
                    yield name, [texts[i] for i in keep], [labels[i] for i in keep], [lines[i] for i in keep]

    def _sst_chunks(self, piece: Piece) -> Iterator[tuple[str, Any, list[Any], list[int]]]:
        classes = 2 if self.d["source"] == "sst2" else 5
        fine = self.d["train_labels"] == "fine" and piece.split == "train"
        words, labels = sst.read_sst(Path(piece.path), 5 if fine else classes,
                                     bool(self.d["phrases"]) and piece.split == "train")
        yield str(piece.split), words, labels, list(range(1, len(labels) + 1))

    def _flat_words(self, texts: list[str]) -> tuple[list[str], int] | None:
        """The words of a chunk of ASCII texts in one `re` pass over them joined by a separator
        token (the C loop, not one call per text), for the `words` rule; None where this path
        would not split exactly as `split_words` (non-ASCII, the separator or control characters
        in a text, the whitespace rule)."""
        if self.d["source"] != "files" or self.d["tokenizer"] != "words":
            return None
        joined = _SEP_JOIN.join(texts)
        if not joined.isascii() or joined.count(_SEP) != len(texts) - 1 or "\x01" in joined or _CONTROL.search(joined):
            return None
        words = _WORDS_ASCII.findall(joined)
        return words, len(texts)

    def _index(self, plan: dict[str, Any]) -> dict[str, int]:
        """word -> id of the plan's vocabulary, the separator -> -1 (built once per piece's plan)."""
        key = id(plan)
        if getattr(self, "_index_key", None) != key:
            vocab = Vocab.from_json(plan["vocab"])
            self._index_cache = {**vocab.tokenizer.get_vocab(), _SEP: -1}
            self._index_key = key
        return self._index_cache

    def _words(self, texts: Any) -> list[list[str]]:
        """Each text's words as `textfiles.split_words` gives them (SST: already words)."""
        if self.d["source"] == "files" and _ascii(texts):
            return ascii_words(texts, self.d["tokenizer"])
        if self.d["source"] != "files" or not _exact(texts, self.d["tokenizer"]):
            return texts if self.d["source"] != "files" else textfiles.split_words(texts, self.d["tokenizer"])
        encoded = batch_tokenizer(None, self.d["tokenizer"]).encode_batch(texts, add_special_tokens=False)
        return [[text[a:b] for a, b in e.offsets] for text, e in zip(texts, encoded)]

    # ------------------------------------------------------------------ the two passes

    def scan(self, piece: Piece) -> dict[str, Any]:
        """Word and label counts of the piece's training rows, row counts of every split: by the
        column path (table_columns.py) where it is exact, else by the Python path."""
        rows = self._column_rows(piece)
        if rows is None:
            return self._scan_rows(piece)
        if getattr(self, "scratch", None):
            rows.save(self._columns_path(piece), self._token_key(piece))
        found = rows.scan()
        return {**found, "words": normalize_counts(found["words"], bool(self.d["lowercase"]))}

    def _column_rows(self, piece: Piece) -> table_columns.PieceRows | None:
        """The piece read and split by the column path, or None where it cannot be exact (then the
        Python path reads it).  CSV/TSV in UTF-8 through pyarrow's reader; any other file, or a
        CSV block that reader could parse otherwise than Python's, through the Python reader
        (its errors name the file and line) and the column kernels."""
        d = self.d
        if not COLUMNS or d["source"] != "files":
            return None
        path = Path(piece.path)
        kind = textfiles.file_format(path, d["format"])
        split = {name: code for code, name in SPLIT_NAMES.items()}.get(str(piece.split))

        def split_of(block: table_columns.Block, names: list[Any]) -> np.ndarray:
            if split is not None:
                return np.full(len(block.texts), split, np.int8)
            if block.python is not None:
                return self.split_of(*block.python)
            return table_columns.hash_splits(block.texts, block.labels, names, d["val_fraction"], d["test_fraction"],
                                       d["split_seed"])

        words = lambda texts: self._words(texts)  # noqa: E731
        try:
            if kind in ("csv", "tsv") and d["encoding"].lower().replace("_", "-") in ("utf-8", "utf8"):
                try:
                    header = self._header(path, kind)
                    at = [header.index(d["text_column"]), header.index(d["label_column"])]
                except (TextDataError, csv.Error, ValueError):
                    at = None  # no such column, or an unreadable header: the Python path says which
                if at is not None:
                    rows = table_columns.PieceRows(reader="arrow")
                    try:
                        blocks = table_columns.csv_blocks(path, piece.start, piece.end, kind, header, *at, rows.intern_labels)
                        return table_columns.read_piece(blocks, rows, d["tokenizer"], words, split_of)
                    except table_columns.Fallback:
                        pass  # read again by the Python reader, from the piece's start
            rows = table_columns.PieceRows()
            blocks = table_columns.python_blocks(self.rows(piece), rows.intern_labels)
            return table_columns.read_piece(blocks, rows, d["tokenizer"], words, split_of)
        except table_columns.Fallback:
            return None

    def _columns_path(self, piece: Piece) -> Path:
        return Path(self.scratch) / f"columns-{piece.index:05d}"

    def _scan_rows(self, piece: Piece) -> dict[str, Any]:
        """scan by the Python path.  With a `scratch` folder, the flat path's rows are also kept there
        as local word ids (`_Tokens`), so `encode` only remaps them: the texts are read and split once."""
        labels: Counter[str] = Counter()
        rows: Counter[str] = Counter()
        tokens = _Tokens() if getattr(self, "scratch", None) else None
        words: Counter[str] = Counter()
        for split, texts, labs, lines in self.chunks(piece):
            rows[split] += len(labs)
            flat = self._flat_words(texts) if tokens is not None or split == "train" else None
            if flat is not None and tokens is not None:
                tokens.add(split, flat[0], labs, lines)
            elif flat is not None:
                words.update(flat[0])
            else:
                if tokens is not None:  # a chunk off the flat path: this piece is encoded from its text
                    words.update(tokens.train_counts())
                    tokens = None
                if split == "train":
                    for sentence in self._words(texts):
                        words.update(sentence)
            if split == "train":
                labels.update(str(lab) for lab in labs)
        if tokens is not None:
            words.update(tokens.train_counts())
            tokens.save(self._token_path(piece), self._token_key(piece))
        words.pop(_SEP, None)  # the flat path's separators between texts are not words
        return {"words": normalize_counts(dict(words), bool(self.d["lowercase"])), "labels": dict(labels),
                "rows": dict(rows)}

    def _token_path(self, piece: Piece) -> Path:
        return Path(self.scratch) / f"tokens-{piece.index:05d}"

    def _token_key(self, piece: Piece) -> dict[str, Any]:
        """What the kept tokens depend on: the piece, its file's size and mtime (an edited file
        misses and is read again) and the data section."""
        st = Path(piece.path).stat()
        return {"piece": [piece.path, piece.start, piece.end, piece.split], "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "d": json.loads(json.dumps(self.d, default=str))}

    def combine(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """Two scans joined (counts added): the store keeps one, not one per piece."""
        out = {}
        for key in ("words", "labels", "rows"):
            joined: Counter[str] = Counter(a.get(key, {}))
            joined.update(b.get(key, {}))
            out[key] = dict(joined)
        return out

    def plan(self, scan: dict[str, Any]) -> dict[str, Any]:
        scans = [scan]
        words: Counter[str] = Counter()
        labels: set[str] = set()
        for s in scans:
            words.update(s["words"])
            labels.update(s["labels"])
        self._check_rows(scans)
        vocab = Vocab.from_counts(dict(words), bool(self.d["lowercase"]), self.d["min_freq"] or 1, self.d["max_vocab"])
        if self.d["source"] == "files":
            classes = textfiles.label_classes(list(labels))
        else:
            classes = sst.CLASS_NAMES[2 if self.d["source"] == "sst2" else 5]
        return {"vocab": vocab.to_json(), "classes": classes}

    def _check_rows(self, scans: list[dict[str, Any]]) -> None:
        """Train and test (and val, when asked) must have rows: the error read_table gives today."""
        rows: Counter[str] = Counter()
        for s in scans:
            rows.update(s["rows"])
        d = self.d
        if d["source"] != "files":
            return
        if d["path"]:
            sizes = [rows["train"], rows["val"], rows["test"]]
            textfiles.check_split_sizes(str(Path(d["path"]).expanduser()), sum(sizes), sizes, d["val_fraction"],
                                        d["test_fraction"])
            return
        for split, path in self._sources():
            if not rows[str(split)]:
                raise TextDataError(f"{path}: no samples (an empty file?)")

    def _splits(self) -> list[str]:
        d = self.d
        if d["source"] != "files":
            return ["train", "val", "test"]
        if d["path"]:
            return ["train", "test"] + (["val"] if d["val_fraction"] else [])
        return [s for s, _ in self._sources() if s]

    def encode(self, piece: Piece, plan: dict[str, Any], out: EntryWriter) -> dict[str, Any]:
        """The piece's rows as token ids (cut to data.max_length) and class ids: the rows scan kept
        (column path) remapped, or read again; the Python path where the column path is not exact."""
        rows = None
        if COLUMNS and self.d["source"] == "files":
            if getattr(self, "scratch", None):
                rows = table_columns.PieceRows.load(self._columns_path(piece), self._token_key(piece))
            if rows is None:
                rows = self._column_rows(piece)
        if rows is not None:
            try:
                return self._encode_columns(piece, rows, plan, out)
            except table_columns.Fallback:
                pass  # a label the training rows lack: the Python path's error names its line
        return self._encode_rows(piece, plan, out)

    def _encode_columns(self, piece: Piece, rows: table_columns.PieceRows, plan: dict[str, Any],
                        out: EntryWriter) -> dict[str, Any]:
        """encode from the column path's rows: local ids through one table to the plan's, split by
        split in row order (what the Python path appends chunk by chunk).  Nothing is written
        before every label is known (else `Fallback`)."""
        index = {c: i for i, c in enumerate(plan["classes"])}
        classes = [index.get(label) for label in rows.labels]
        if None in classes:
            raise table_columns.Fallback("a label the training rows lack")
        vocab = Vocab.from_json(plan["vocab"])
        table = table_columns.id_table(list(rows.words), vocab.tokenizer.get_vocab(), vocab, bool(self.d["lowercase"]))
        values = table[rows.ids[0]]
        lengths = rows.lengths[0].astype(np.int64)
        labels = np.asarray(classes, np.int64)[rows.row_labels[0]] if classes else np.zeros(0, np.int64)
        splits = self._splits() if piece.split is None else [piece.split]
        code = {name: k for k, name in SPLIT_NAMES.items()}
        limit, counts = self.d["max_length"], {s: {"rows": 0, "cut": 0, "longest": 0} for s in splits}
        parts = []
        for split in splits:
            mask = rows.splits[0] == code[split]
            kept, kept_lengths = table_columns.cut(values[np.repeat(mask, lengths)], lengths[mask], limit, counts[split])
            parts.append((split, kept, kept_lengths, labels[mask]))
            counts[split]["rows"] = int(mask.sum())
        for split, kept, kept_lengths, kept_labels in parts:
            tokens, classes_out = out.ragged(split, 0), out.dense(split, 1, "int64")
            if len(kept_lengths):
                tokens.append_flat(kept, kept_lengths)
                classes_out.append(kept_labels)
        return counts

    def _encode_rows(self, piece: Piece, plan: dict[str, Any], out: EntryWriter) -> dict[str, Any]:
        """encode by the Python path, a chunk at a time."""
        vocab = Vocab.from_json(plan["vocab"])
        index = {c: i for i, c in enumerate(plan["classes"])}
        splits = self._splits() if piece.split is None else [piece.split]
        columns = {s: (out.ragged(s, 0), out.dense(s, 1, "int64")) for s in splits}
        limit, counts = self.d["max_length"], {s: {"rows": 0, "cut": 0, "longest": 0} for s in splits}
        kept = _Tokens.load(self._token_path(piece), self._token_key(piece)) if getattr(self, "scratch", None) else None
        if kept is not None:  # scan's local ids remapped: no CSV read, no regex
            table = kept.table(self._index(plan), bool(self.d["lowercase"]))
            for split, ids, labels, lines in kept.parts():
                values, lengths = _cut_flat(table[ids], limit, counts[split])
                columns[split][0].append_flat(values, lengths)
                columns[split][1].append(self._label_ids(piece, labels, lines, index))
                counts[split]["rows"] += len(lengths)
            return counts
        fast = batch_tokenizer(plan["vocab"], self.d["tokenizer"]) if self.d["source"] == "files" else None
        for split, texts, labels, lines in self.chunks(piece):
            flat = self._flat_words(texts) if fast is not None else None
            if flat is not None:  # a chunk's words in one regex pass and one lookup pass
                values, lengths = flat_ids(flat, self._index(plan), bool(self.d["lowercase"]), limit, counts[split])
                columns[split][0].append_flat(values, lengths)
                columns[split][1].append(self._label_ids(piece, labels, lines, index))
                counts[split]["rows"] += len(lengths)
                continue
            if fast is not None and _ascii(texts):
                ids = ascii_ids(ascii_words(texts, self.d["tokenizer"]), vocab, bool(self.d["lowercase"]))
            elif fast is not None and _exact(texts, self.d["tokenizer"]):  # split and looked up in one Rust call: no Python string per word
                ids = [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
            else:
                ids = vocab.encode_batch(self._words(texts))
            if limit:
                long = [len(s) for s in ids if len(s) > limit]
                if long:
                    counts[split]["cut"] += len(long)
                    counts[split]["longest"] = max(counts[split]["longest"], *long)
                    ids = [s[:limit] for s in ids]
            columns[split][0].append(ids)
            columns[split][1].append(self._label_ids(piece, labels, lines, index))
            counts[split]["rows"] += len(ids)
        return counts

    def _label_ids(self, piece: Piece, labels: list[Any], lines: list[int], index: dict[str, int]) -> list[int]:
        if self.d["source"] != "files":
            return labels
        table = textfiles.Table(piece.path, [], labels, lines)
        return textfiles.label_ids(table, list(index), self._train_path())

    def _train_path(self) -> str:
        return str(self._sources()[0][1])

    def info(self, plan: dict[str, Any], counts: list[dict[str, Any]]) -> dict[str, Any]:
        vocab = Vocab.from_json(plan["vocab"])
        total: dict[str, Counter[str]] = {}
        for c in counts:
            for split, n in c.items():
                total.setdefault(split, Counter()).update({"rows": n["rows"], "cut": n["cut"]})
                total[split]["longest"] = max(total[split]["longest"], n["longest"])
        for split, n in total.items():
            if n["cut"]:
                note(f"{split}: cut {n['cut']:,} of {n['rows']:,} texts to data.max_length={self.d['max_length']} "
                     f"words (the longest had {n['longest']:,})")
        d = self.d
        sizes = ", ".join(f"{split} {total[split]['rows']:,}" for split in ("train", "val", "test") if split in total)
        note(f"{d['source']}: {sizes} texts; {len(plan['classes'])} classes; vocabulary {len(vocab):,} words")
        groups = [[0, 1], [3, 4]] if d["source"] != "files" and d["train_labels"] == "fine" else None
        return {"classes": plan["classes"], "vocab": vocab.to_json(), "vocab_digest": vocab.digest,
                "vocab_size": len(vocab), "tokenizer": d["tokenizer"], "max_length": d["max_length"],
                "output_groups": groups}


_WORDS_ASCII = re.compile(textfiles._WORDS, re.ASCII)


_SEP = "\x00"  # between texts: matched by [^\w\s] as a token of its own, never inside a word
_SEP_JOIN = f" {_SEP} "


def flat_ids(flat: tuple[list[str], int], index: dict[str, int], lowercase: bool, limit: int | None,
             counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of the chunk's texts from its flat word list (separators -1), each text
    cut to `limit` words (the cut counted in `counts`)."""
    words, n = flat
    if lowercase:  # one C pass over all the words, not a lower() per word
        words = "\x01".join(words).lower().split("\x01")
    unk = index[SPECIALS[UNK]]
    ids = np.fromiter((index.get(w, unk) for w in words), dtype=np.int64, count=len(words))
    values, lengths = _cut_flat(ids, limit, counts)
    assert len(lengths) == n
    return values, lengths


def _cut_flat(ids: np.ndarray, limit: int | None, counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of flat ids whose texts are parted by -1, each cut to `limit` words."""
    seps = np.flatnonzero(ids == -1)
    bounds = np.concatenate([[-1], seps, [len(ids)]])
    lengths = np.diff(bounds) - 1
    return table_columns.cut(np.delete(ids, seps), lengths, limit, counts)


class _Tokens:
    """A piece's rows as scan split them: local word ids (first seen first, the separator one of
    them), per chunk its split, labels and lines.  Kept in the store's scratch folder as one
    `.npy` of ids (no pickle: the folder is untrusted) and a JSON of the rest."""

    def __init__(self) -> None:
        self.local: dict[str, int] = {}
        self.ids: list[np.ndarray] = []
        self.meta: list[tuple[str, list[Any], list[int]]] = []

    def add(self, split: str, words: list[str], labels: list[Any], lines: list[int]) -> None:
        local = self.local
        new = [w for w in dict.fromkeys(words) if w not in local]  # C passes; Python only per new word
        local.update(zip(new, range(len(local), len(local) + len(new))))
        self.ids.append(np.fromiter(map(local.__getitem__, words), np.int32, count=len(words)))
        self.meta.append((split, list(labels), list(lines)))

    def train_counts(self) -> dict[str, int]:
        total = np.zeros(len(self.local), np.int64)
        for ids, (split, _, _) in zip(self.ids, self.meta):
            if split == "train":
                total += np.bincount(ids, minlength=len(self.local))
        return {w: int(c) for w, c in zip(self.local, total.tolist()) if c}

    def save(self, path: Path, key: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}-{os.getpid()}")
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int32)
        with open(f"{tmp}.npy", "wb") as f:
            np.save(f, ids, allow_pickle=False)
        meta = {"key": key, "words": list(self.local), "sizes": [len(i) for i in self.ids], "chunks": self.meta}
        with open(f"{tmp}.json", "w", encoding="utf-8") as f:
            f.write(json.dumps(meta))  # dumps: the C encoder (dump streams through Python)
        os.replace(f"{tmp}.npy", f"{path}.npy")
        os.replace(f"{tmp}.json", f"{path}.json")  # last: the pair counts only once the JSON names the key

    @classmethod
    def load(cls, path: Path, key: dict[str, Any]) -> _Tokens | None:
        """The kept tokens, or None (absent, another piece's or file version's, or damaged)."""
        try:
            with open(f"{path}.json", encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("key") != key:
                return None
            from .npyfiles import load_npy

            ids = load_npy(Path(f"{path}.npy"))  # a scratch file: its header's claim checked against its size
            sizes = [int(n) for n in meta["sizes"]]
            if ids.dtype != np.int32 or ids.ndim != 1 or sum(sizes) != len(ids) or (
                    len(ids) and not 0 <= int(ids.min()) <= int(ids.max()) < len(meta["words"])):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        out = cls()
        out.local = {str(w): i for i, w in enumerate(meta["words"])}
        out.ids = np.split(ids, np.cumsum(sizes)[:-1]) if sizes else []
        out.meta = [(str(s), labels, [int(x) for x in lines]) for s, labels, lines in meta["chunks"]]
        return out

    def table(self, index: dict[str, int], lowercase: bool) -> np.ndarray:
        """local id -> the plan's id (the separator -> -1), looked up as `flat_ids` does."""
        words = list(self.local)
        if lowercase:
            words = [w.lower() for w in words]  # ASCII words: Python's lower() is Rust's
        unk = index[SPECIALS[UNK]]
        return np.fromiter((index.get(w, unk) for w in words), np.int64, count=len(words))

    def parts(self) -> Iterator[tuple[str, np.ndarray, list[Any], list[int]]]:
        for ids, (split, labels, lines) in zip(self.ids, self.meta):
            yield split, ids, labels, lines


def _ascii(texts: list[str]) -> bool:
    return all(t.isascii() for t in texts)


def ascii_words(texts: list[str], rule: str) -> list[list[str]]:
    """split_words for ASCII texts through Python's `re` (C, no per-call tokenizers overhead): on
    ASCII, \\w, \\s and \\b mean the same in Python's ASCII mode and in Oniguruma, so the
    matches are the pre-tokenizer's; whitespace and U+001C-U+001F dropped as split_words drops them."""
    if rule == "words":
        return [[w for w in _WORDS_ASCII.findall(t) if w.strip()] for t in texts]
    return [_ws_split(t) for t in texts]


def _ws_split(text: str) -> list[str]:
    """HF WhitespaceSplit on ASCII (splits on \\s only, not U+001C-U+001F), then split_words' strip filter."""
    return [w for w in re.split(r"[ \t\n\r\x0b\x0c]+", text) if w.strip()]


def ascii_ids(words: list[list[str]], vocab: Vocab, lowercase: bool) -> list[list[int]]:
    """Vocab.encode_batch on ASCII words (where Python's lower() is Rust's): a dict lookup."""
    index = vocab.tokenizer.get_vocab()
    unk = index[SPECIALS[UNK]]
    if lowercase:
        return [[index.get(w.lower(), unk) for w in s] for s in words]
    return [[index.get(w, unk) for w in s] for s in words]


_CONTROL = re.compile("[\x1c-\x1f]")


def _exact(texts: list[str], rule: str) -> bool:
    """Whether `batch_tokenizer` splits these texts exactly as split_words does (see there)."""
    return rule == "words" or not any(_CONTROL.search(t) for t in texts)


def batch_tokenizer(vocab_json: str | None, rule: str) -> Any:
    """A `tokenizers.Tokenizer` that splits raw texts exactly as `textfiles.split_words` does and
    (given a vocabulary's JSON) looks the words up as `Vocab.encode_batch` does, in one batched
    Rust call.  split_words drops the regex's whitespace runs and any word that `str.strip`
    empties: WhitespaceSplit drops the former; the only characters Python strips that Unicode
    (hence Rust) does not call whitespace, U+001C-U+001F, are made spaces first (the "words"
    rule: there they are words of their own; under "whitespace" a chunk holding one takes the
    slow path, `_exact`).  Without a vocabulary, an empty WordLevel model: only the offsets
    (the words) are read."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = (Tokenizer.from_str(vocab_json) if vocab_json
                 else Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    steps = [normalizers.Replace(Regex("[\\x{1c}-\\x{1f}]"), " ")] if rule == "words" else []
    if tokenizer.normalizer is not None:
        steps.append(tokenizer.normalizer)
    if steps:
        tokenizer.normalizer = normalizers.Sequence(steps)
    split = [textfiles.word_splitter("words")] if rule == "words" else []
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([*split, pre_tokenizers.WhitespaceSplit()])
    return tokenizer


def _chain(head: list[str], lines: Iterator[str]) -> Iterator[str]:
    """The header (quoted, on one line) then the piece's lines; `_renumber` moves the reader's
    line numbers to the file's."""
    yield from head
    yield from lines


def run_serially(stream: Any, out: EntryWriter) -> dict[str, Any]:
    """Every piece scanned, planned and encoded in this process, in order (the store's driver runs
    the same calls on every core or as a job array): the entry's info."""
    pieces = stream.pieces()
    plan = stream.plan(functools.reduce(stream.combine, (stream.scan(p) for p in pieces)))
    return stream.info(plan, [stream.encode(p, plan, out) for p in pieces])
