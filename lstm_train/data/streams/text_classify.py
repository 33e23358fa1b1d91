"""text_classify's preparation as a `Stream` (see streams/base.py): CSV/TSV/JSONL/Parquet/datasets and SST.

Pieces are byte ranges of equal size, at most `base.PIECE_BYTES`, cut on line boundaries (`base.cut`,
`even`: a function of the file's size, so the cut never depends on the shard count; a file over one
piece is two, so every core gets work); a CSV/TSV is only cut at a newline outside quotes (an even
count of `"` before it: RFC 4180 doubles a quote inside a quoted field), so a quoted field holding
newlines is never split.  The header is read once per piece from the file's
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
path alone): table_read.py reads a piece's lines, table_words.py splits and looks up its words.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..readers import sst, textfiles
from . import table_columns
from ..store.entry_format import EntryWriter
from ..store.runner import cores
from .base import Piece, cut
from .table_columns import SPLIT_NAMES
from .table_read import RecordEnds, chain_header, range_lines, renumber
from .table_words import SEP, Tokens, all_ascii, ascii_ids, ascii_words, batch_tokenizer, cut_flat, exact, flat_ids, flat_words
from ..readers.textfiles import TextDataError
from ..vocab import Vocab, normalize_counts
from ...messages import note

_LAST_VOCAB: list[Vocab] = []  # the plan's vocabulary last made or parsed in this process (not pickled with a stream)
COLUMNS = True  # the Arrow column path (table_columns.py) wherever it is exact; False: the Python path only
CHUNK_ROWS = 8192  # rows tokenized and written at a time
FIELDS = ("source", "path", "train_path", "val_path", "test_path", "text_column", "label_column", "format",
          "encoding", "val_fraction", "test_fraction", "split_seed", "tokenizer", "lowercase", "min_freq",
          "max_vocab", "max_length", "root", "phrases", "train_labels")


class TextStream:
    """text_classify's Stream: built from the job's data section (plain values: picklable)."""

    def __init__(self, data: Any) -> None:
        self.d = {k: getattr(data, k, None) for k in FIELDS}
        self.threads = False  # set by `pieces`: a piece's blocks read on two threads (a spare core each)

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
            size = path.stat().st_size
            ranges = cut(0, size, RecordEnds(path, kind != "jsonl"), even=True) if kind in ("csv", "tsv", "jsonl") \
                else [(0, size)]
            out += [Piece(len(out) + i, str(path), a, None if b >= size else b, split)
                    for i, (a, b) in enumerate(ranges or [(0, size)])]
        self.threads = 2 * len(out) <= cores()  # a spare core per piece: its blocks on two threads (read_piece)
        return out

    # ------------------------------------------------------------------ rows

    def _header(self, path: Path, kind: str) -> list[str]:
        """The CSV/TSV header (the file's first record), read again by every piece: 64 KiB decoded at
        a time (a header is a line or a few), not a whole block."""
        lines = range_lines(path, 0, None, self.d["encoding"], 1 << 16)
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
            lines = chain_header([delimiter.join('"' + h.replace('"', '""') + '"' for h in header) + "\n"], lines)
        try:
            if kind == "jsonl":
                numbered = ((i, t) for i, t in enumerate(lines, 1))
                yield from textfiles._read_jsonl(path, numbered, d["text_column"], d["label_column"], [])
            else:
                yield from textfiles._read_delimited(path, lines, "\t" if kind == "tsv" else ",", d["text_column"],
                                                     d["label_column"], [])
        except TextDataError as e:
            raise renumber(e, path, piece.start, header_lines if kind != "jsonl" else 0) from None

    def split_of(self, texts: list[str], labels: list[str | None]) -> np.ndarray:
        """TRAIN / VAL / TEST of each row of a file cut by fraction: a seeded hash of its content."""
        d = self.d
        return textfiles.content_split(texts, labels, d["val_fraction"], d["test_fraction"], d["split_seed"])

    def chunks(self, piece: Piece) -> Iterator[tuple[str, list[list[str]] | list[str], list[Any], list[int]]]:
        """(split, texts, labels, lines) a chunk at a time: SST gives word lists, files give texts."""
        if self.d["source"] != "files":
            yield from self._sst_chunks(piece)
            return
        from .base import chunks

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
        """`table_words.flat_words` for the `words` rule of files; None elsewhere."""
        if self.d["source"] != "files" or self.d["tokenizer"] != "words":
            return None
        return flat_words(texts)

    def _index(self, plan: dict[str, Any]) -> dict[str, int]:
        """word -> id of the plan's vocabulary, the separator -> -1 (built once per piece's plan)."""
        key = id(plan)
        if getattr(self, "_index_key", None) != key:
            vocab = self._plan_vocab(plan)
            self._index_cache = {**vocab.tokenizer.get_vocab(), SEP: -1}
            self._index_key = key
        return self._index_cache

    def _words(self, texts: Any) -> list[list[str]]:
        """Each text's words as `textfiles.split_words` gives them (SST: already words)."""
        if self.d["source"] == "files" and all_ascii(texts):
            return ascii_words(texts, self.d["tokenizer"])
        if self.d["source"] != "files" or not exact(texts, self.d["tokenizer"]):
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
                        return table_columns.read_piece(blocks, rows, d["tokenizer"], words, split_of,
                                                       getattr(self, "threads", False))
                    except table_columns.Fallback:
                        pass  # read again by the Python reader, from the piece's start
            rows = table_columns.PieceRows()
            blocks = table_columns.python_blocks(self.rows(piece), rows.intern_labels)
            return table_columns.read_piece(blocks, rows, d["tokenizer"], words, split_of,
                                            getattr(self, "threads", False))
        except table_columns.Fallback:
            return None

    def _columns_path(self, piece: Piece) -> Path:
        return Path(self.scratch) / f"columns-{piece.index:05d}"

    def _scan_rows(self, piece: Piece) -> dict[str, Any]:
        """scan by the Python path.  With a `scratch` folder, the flat path's rows are also kept there
        as local word ids (`Tokens`), so `encode` only remaps them: the texts are read and split once."""
        labels: Counter[str] = Counter()
        rows: Counter[str] = Counter()
        tokens = Tokens() if getattr(self, "scratch", None) else None
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
        words.pop(SEP, None)  # the flat path's separators between texts are not words
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

    def plan(self, scan: dict[str, Any]) -> dict[str, Any]:
        scans = [scan]
        words: Counter[str] = Counter()
        labels: set[str] = set()
        for s in scans:
            words.update(s["words"])
            labels.update(s["labels"])
        self._check_rows(scans)
        vocab = Vocab.from_counts(dict(words), bool(self.d["lowercase"]), self.d["min_freq"] or 1, self.d["max_vocab"])
        _LAST_VOCAB[:] = [vocab]  # info (in this process) takes it back instead of parsing the plan's JSON again
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
        vocab = self._plan_vocab(plan)
        table = table_columns.id_table(list(rows.words), vocab.tokenizer.get_vocab(), vocab, bool(self.d["lowercase"]))
        values = table[rows.ids[0]]
        lengths = rows.lengths[0].astype(np.int64)
        labels = np.asarray(classes, np.int64)[rows.row_labels[0]] if classes else np.zeros(0, np.int64)
        splits = self._splits() if piece.split is None else [piece.split]
        code = {name: k for k, name in SPLIT_NAMES.items()}
        limit, counts = self.d["max_length"], {s: {"rows": 0, "cut": 0, "longest": 0} for s in splits}
        parts = []
        token_splits = np.repeat(rows.splits[0], lengths)  # each token's split: one pass, not one per split
        for split in splits:
            mask = rows.splits[0] == code[split]
            kept, kept_lengths = table_columns.cut(values[token_splits == code[split]], lengths[mask], limit,
                                                   counts[split])
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
        vocab = self._plan_vocab(plan)
        index = {c: i for i, c in enumerate(plan["classes"])}
        splits = self._splits() if piece.split is None else [piece.split]
        columns = {s: (out.ragged(s, 0), out.dense(s, 1, "int64")) for s in splits}
        limit, counts = self.d["max_length"], {s: {"rows": 0, "cut": 0, "longest": 0} for s in splits}
        kept = Tokens.load(self._token_path(piece), self._token_key(piece)) if getattr(self, "scratch", None) else None
        if kept is not None:  # scan's local ids remapped: no CSV read, no regex
            table = kept.table(self._index(plan), bool(self.d["lowercase"]))
            for split, ids, labels, lines in kept.parts():
                values, lengths = cut_flat(table[ids], limit, counts[split])
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
            if fast is not None and all_ascii(texts):
                ids = ascii_ids(ascii_words(texts, self.d["tokenizer"]), vocab, bool(self.d["lowercase"]))
            elif fast is not None and exact(texts, self.d["tokenizer"]):  # split and looked up in one Rust call: no Python string per word
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

    @staticmethod
    def _plan_vocab(plan: dict[str, Any]) -> Vocab:
        """The plan's vocabulary, parsed once per process (a worker encodes many pieces with one plan;
        `plan` leaves the one it made for `info`)."""
        if not (_LAST_VOCAB and _LAST_VOCAB[0].to_json() == plan["vocab"]):
            _LAST_VOCAB[:] = [Vocab.from_json(plan["vocab"])]
        return _LAST_VOCAB[0]

    def info(self, plan: dict[str, Any], counts: list[dict[str, Any]]) -> dict[str, Any]:
        vocab = self._plan_vocab(plan)
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
