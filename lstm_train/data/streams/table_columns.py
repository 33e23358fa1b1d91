"""text_classify's rows at column speed: a piece read and split into words by Arrow kernels.

The Python path (text_classify.py: `csv.reader`, `re` per chunk, a dict lookup per word) is
bound by Python per row and per word.  Here a piece's rows are Arrow string columns and
the work per word is C++:

* CSV/TSV in UTF-8 are read by pyarrow's CSV reader a block at a time, only where it parses
  exactly as `csv.reader(strict=True)` over `str.splitlines` does (`csv_blocks`): each block
  must match `csv_grammar` (Python's strict dialect written as an RE2 expression, run over
  the block by Arrow), hold the header's number of columns, no field over csv's field size
  limit, no byte order mark where Python would keep one.  Anything else (and JSON Lines,
  Parquet, `datasets`) comes from the Python reader (`TextStream.rows`), whose errors name
  the file and line; either way the rows of a chunk become one Arrow string column.
* The PTB word rule (`textfiles._WORDS`) splits the rows that are ASCII without U+001C-U+001F
  (`ascii_tokens`): Arrow cuts them at whitespace and dictionary-encodes the chunks, Python's
  `re` in ASCII mode (whose `\\w`, `\\s` and `\\b` are Oniguruma's there) splits each distinct
  chunk once.  Other rows are split by the exact Python path (`TextStream._words`): the same
  words either way.
* Words become piece-local ids through `dictionary_encode`; word and label counts are
  `bincount`s, so Python runs per distinct word, not per word.

A piece is `PieceRows`: local words and labels, and per row its word count, split and
label; scan keeps it in the store's scratch folder (plain `.npy` and JSON: untrusted, checked
when read back) and encode maps the local ids to the plan's.  Where any check fails the piece
is read again by the Python path, from its start: that path is the reference, and
tests/test_table_columns.py prepares fixtures both ways and compares the entries byte for byte.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import operator
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..readers import textfiles
from ..readers.textfiles import TEST, TRAIN, VAL
from . import arrow_buffers

SPLIT_NAMES = {TRAIN: "train", VAL: "val", TEST: "test"}


def _safe_newline(raw: bytes, start: int, quotes: int, quoted: bool) -> int | None:
    """The first newline at or after `start` in `raw` outside quotes (`quotes` counted before `start`)."""
    while (at := raw.find(b"\n", start)) >= 0:
        if not quoted:
            return at
        quotes += raw.count(b'"', start, at)
        if quotes % 2 == 0:
            return at
        start = at + 1
    return None

BLOCK_BYTES = 16 << 20  # raw bytes parsed at a time (cut at a newline outside quotes): fewer, larger
# blocks pay the per-block costs (a Python set of each block's distinct words) less often
CHUNK_ROWS = 65536  # rows of the Python reader turned into one column at a time

# The word rule in Python's ASCII mode: on ASCII text its \w, \s and \b are Oniguruma's (the
# pre-tokenizer's), so it splits as `textfiles.split_words` does (table_words.ascii_words).
WORDS_ASCII = re.compile(textfiles._WORDS, re.ASCII)
_BOM = b"\xef\xbb\xbf"
# Characters str.splitlines ends a line at besides \r and \n (Python's reader sees a record end there).
_LINE_ENDS = r"\x0b\x0c\x1c-\x1e\x{85}\x{2028}\x{2029}"


class Fallback(Exception):
    """The column path cannot be exact for this piece: read it with the Python path."""


def csv_grammar(delimiter: str) -> str:
    """`csv.reader(strict=True)`'s accepted input (quote `"`, doubled quotes, no escape, no initial
    space skipping), lines as `str.splitlines` cuts them, as one anchored RE2 expression: a field
    is empty, quoted (then followed by the delimiter, a line end or the end), or unquoted (not
    starting with a quote, holding no delimiter and no line end).  Python's reader is the
    deterministic automaton of this language, so a block that matches parses one way: the way
    Arrow's reader parses it.  Unquoted fields holding a splitlines-only line end are refused
    (Python would end the record there): such a block takes the Python path."""
    d = re.escape(delimiter)
    quoted = r'"(?:[^"]|"")*"'
    unquoted = rf'[^"{d}\r\n{_LINE_ENDS}][^{d}\r\n{_LINE_ENDS}]*'
    cell = rf"(?:{quoted}|{unquoted})?"
    record = rf"{cell}(?:{d}{cell})*"
    return rf"\A(?:{record}[\r\n])*{record}\z"


def raw_blocks(path: Path, start: int, end: int | None, size: int | None = None) -> Iterator[bytes]:
    """Bytes [start, end) of a file in blocks of about `size`, each ending just after a newline with
    an even number of quotes before it in the block (the piece cut's rule, table_read.RecordEnds),
    or at the end.  A cut inside a quoted field leaves a block that fails `csv_grammar`."""
    size = size or BLOCK_BYTES
    with open(path, "rb") as f:
        f.seek(start)
        left = None if end is None else end - start
        carry = b""
        while True:
            raw = f.read(size if left is None else min(size, left))
            if left is not None:
                left -= len(raw)
            data = carry + raw
            if not raw:
                if data:
                    yield data
                return
            begin = max(0, len(data) - (size >> 2))
            at = _safe_newline(data, begin, data.count(b'"', 0, begin), True)
            if at is None:
                carry = data  # one record longer than a quarter block (or an odd quote count): read on
                continue
            yield data[:at + 1]
            carry = data[at + 1:]


@dataclass
class Block:
    """A block of rows: their texts (Arrow strings) and label (stripped) as an index into `labels`."""

    texts: Any  # pyarrow StringArray / LargeStringArray
    labels: np.ndarray  # int32 per row, into PieceRows.labels
    python: tuple[list[str], list[Any]] | None = None  # the Python reader's texts and labels, where it read them
    plain: bool = False  # every text ASCII without U+001C-U+001F (known from the raw block): `fast_rows` all true


def csv_blocks(path: Path, start: int, end: int | None, kind: str, header: list[str], text_at: int,
               label_at: int, intern: Callable[[list[Any]], np.ndarray]) -> Iterator[Block]:
    """The piece's rows read by pyarrow's CSV reader, a block at a time; raises `Fallback` where
    the result could differ from the Python reader's (see `csv_grammar`)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    delimiter = "\t" if kind == "tsv" else ","
    grammar = csv_grammar(delimiter)
    names = [f"f{i}" for i in range(len(header))]
    read = pcsv.ReadOptions(column_names=names, use_threads=False, block_size=BLOCK_BYTES + (1 << 20))
    parse = pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, ignore_empty_lines=True)
    convert = pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False,
                                  quoted_strings_can_be_null=False, null_values=[])
    limit = csv.field_size_limit()
    first = start == 0
    for raw in raw_blocks(path, start, end):
        if raw.startswith(_BOM) and not first:
            raise Fallback("a byte order mark inside the file (Python keeps it as text)")
        if sys.version_info < (3, 11) and b"\0" in raw:
            raise Fallback("a NUL byte (Python before 3.11 refuses it)")
        try:
            text = arrow_buffers.strings(raw)  # UTF-8 checked (else Python names the byte)
            if not pc.match_substring_regex(text, grammar)[0].as_py():
                raise Fallback("not parsed as Python's csv reader parses it")
            table = pcsv.read_csv(pa.BufferReader(raw), read_options=read, parse_options=parse,
                                  convert_options=convert)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise Fallback(str(e)) from None
        del text
        if table.num_columns != len(header):
            raise Fallback("rows with another number of fields than the header")
        if first:  # the header record: Python reads it apart (stripped)
            if table.num_rows == 0 or [table.column(i)[0].as_py().strip() for i in range(len(header))] != header:
                raise Fallback("the header is not read as Python reads it")
            table = table.slice(1)
            first = False
        if table.num_rows == 0:
            continue
        for column in table.columns:
            if column.num_chunks and pc.max(pc.binary_length(column)).as_py() > limit:
                raise Fallback("a field over csv.field_size_limit()")
        texts = table.column(text_at).combine_chunks()
        labels = pc.dictionary_encode(table.column(label_at).combine_chunks())
        yield Block(texts, intern_labels(labels, intern), plain=plain(raw))


def intern_labels(labels: Any, intern: Callable[[list[Any]], np.ndarray]) -> np.ndarray:
    """Per row the index (PieceRows.labels) of its label stripped as Python strips it: the distinct
    raw labels are stripped in Python, an empty one is Python's error to give."""
    raw = labels.dictionary.to_pylist()
    stripped = [label.strip() for label in raw]
    if not all(stripped):
        raise Fallback("an empty label")
    return intern(stripped)[arrow_buffers.to_numpy(labels.indices)]


def python_blocks(rows: Iterator[textfiles.Row], intern: Callable[[list[Any]], np.ndarray]) -> Iterator[Block]:
    """The Python reader's rows (checked by it, errors naming file and line) as column blocks."""
    import pyarrow as pa

    from .base import chunks

    for chunk in chunks(rows, CHUNK_ROWS):
        texts = [r[0] for r in chunk]
        labels = [r[1] for r in chunk]
        try:
            column = pa.array(texts, pa.large_string())
        except (pa.ArrowException, UnicodeError):  # a lone surrogate (a JSON escape): not UTF-8
            raise Fallback("a text that is not valid Unicode") from None
        distinct = list(dict.fromkeys(labels))
        local = intern(distinct)
        where = {label: i for i, label in enumerate(distinct)}
        yield Block(column, local[np.fromiter((where[label] for label in labels), np.int64, count=len(labels))],
                    (texts, labels))


def plain(raw: bytes) -> bool:
    """Whether a raw block is ASCII without U+001C-U+001F: then so is every text read from it, and
    `fast_rows` needs no per-row pass (bytes.isascii and `in`: memchr speed)."""
    return raw.isascii() and not any(c in raw for c in (b"\x1c", b"\x1d", b"\x1e", b"\x1f"))


def fast_rows(texts: Any) -> np.ndarray:
    """Rows `ascii_tokens` splits exactly: ASCII, without U+001C-U+001F (Python's `strip` drops them,
    Oniguruma calls them punctuation; the Python path replaces them)."""
    import pyarrow.compute as pc

    clean = pc.and_(pc.string_is_ascii(texts), pc.invert(pc.match_substring_regex(texts, "[\x1c-\x1f]")))
    return arrow_buffers.to_numpy(clean)


def chunk_codes(texts: Any) -> tuple[np.ndarray, Any]:
    """(per-row chunk counts, the chunks dictionary-encoded) of texts cut at ASCII whitespace: the
    Arrow kernels of `ascii_tokens` (C++ without the GIL, so another thread may run them)."""
    import pyarrow.compute as pc

    lists = pc.ascii_split_whitespace(texts)
    per_row = arrow_buffers.to_numpy(pc.list_value_length(lists)).astype(np.int64)
    return per_row, pc.dictionary_encode(pc.list_flatten(lists))


def ascii_tokens(texts: Any, rule: str, coded: tuple[np.ndarray, Any] | None = None
                 ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(ids, words, per-row counts) of ASCII texts: each text's words as `textfiles.split_words(texts,
    rule)` gives them are `words[i]` for its run of `ids`.

    No word of either rule holds whitespace, and the word rule's `\\b` and lookahead see a space
    or the end of the text alike, so a text's words are the words of its whitespace-separated
    chunks in turn.  Arrow splits the texts at ASCII whitespace (`\\s` of Python's ASCII mode:
    space, \\t, \\n, \\r, \\v, \\f) and dictionary-encodes the chunks (C++, per chunk); the
    rule itself runs as Python's `re` (`table_words.ascii_words`, the reference) once per
    distinct chunk, and numpy spreads each chunk's words over its occurrences.  The cost in
    Python is per distinct chunk (bounded by the vocabulary and its punctuated forms), not per word.
    `coded`: `chunk_codes(texts)` if already made (read_piece makes it on its side thread)."""
    per_row, encoded = coded if coded is not None else chunk_codes(texts)
    chunks = encoded.dictionary.to_pylist()
    at = arrow_buffers.to_numpy(encoded.indices)  # int32: a block holds far fewer than 2**31 chunks
    del encoded
    if rule == "words":
        parts = [[c] if c.isalnum() else WORDS_ASCII.findall(c) for c in chunks]  # isalnum: one plain word
    else:
        parts = [[c] if c else [] for c in chunks]
    del chunks
    sizes = np.fromiter(map(len, parts), np.int32, count=len(parts))
    words = [w for part in parts for w in part]
    del parts
    # int32 and in place: this runs on a block of a worker whose memory the store bounds
    n = sizes[at]  # words per chunk occurrence
    ends = np.cumsum(n, dtype=np.int32)
    base = (np.cumsum(sizes, dtype=np.int32) - sizes)[at]  # each occurrence's first word in `words`
    del at
    base -= ends
    base += n
    ids = np.repeat(base, n)
    del base
    ids += np.arange(len(ids), dtype=np.int32)
    total = np.concatenate([[0], ends.astype(np.int64)])
    del n, ends
    row_ends = np.cumsum(per_row)
    return ids, words, total[row_ends] - total[row_ends - per_row]


def hash_splits(texts: Any, labels: np.ndarray, names: list[Any], val: float, test: float, seed: int) -> np.ndarray:
    """`textfiles.content_split` of these rows (TRAIN/VAL/TEST per row), hashing the same bytes:
    the text's UTF-8 (Arrow's), a NUL, the label as `f"{label}"`.  The bytes are joined by Arrow
    and hashed by C calls mapped over them (no Python function per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = int(seed or 0).to_bytes(8, "little", signed=True)
    suffix = arrow_buffers.binaries([f"\0{name}".encode("utf-8", "surrogatepass") for name in names])
    data = pc.binary_join_element_wise(texts.cast(pa.large_binary()), suffix.take(arrow_buffers.integers(labels)),
                                        arrow_buffers.empties(len(texts)))
    new = functools.partial(hashlib.blake2b, digest_size=8, key=key)
    digests = b"".join(map(operator.methodcaller("digest"), map(new, data.to_pylist())))
    return textfiles.split_of_hashes(np.frombuffer(digests, "<u8"), val, test)


def _intern(table: dict[Any, int], items: list[Any]) -> np.ndarray:
    """Indices of `items` in `table`, the new ones appended in order of first appearance: the new
    items found by C passes (`dict.fromkeys`), so Python runs per new item, not per item."""
    new = [item for item in dict.fromkeys(items) if item not in table]
    table.update(zip(new, range(len(table), len(table) + len(new))))
    return np.fromiter(map(table.__getitem__, items), np.int32, count=len(items))


@dataclass
class PieceRows:
    """A piece's rows as scan split them: local words (first seen first) and labels, the words'
    local ids, and per row its word count, split (textfiles.TRAIN/VAL/TEST) and label index."""

    words: dict[str, int] = field(default_factory=dict)
    labels: dict[Any, int] = field(default_factory=dict)
    ids: list[np.ndarray] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)
    splits: list[np.ndarray] = field(default_factory=list)
    row_labels: list[np.ndarray] = field(default_factory=list)
    reader: str = "python"  # which reader read the rows: "arrow" (csv_blocks) or "python" (python_blocks)

    def intern_labels(self, names: list[Any]) -> np.ndarray:
        """Local indices of labels (new ones appended)."""
        return _intern(self.labels, names)

    def intern_words(self, words: list[str]) -> np.ndarray:
        return _intern(self.words, words)

    def add(self, ids: np.ndarray, lengths: np.ndarray, splits: np.ndarray, labels: np.ndarray) -> None:
        self.ids.append(ids.astype(np.int32, copy=False))
        self.lengths.append(lengths.astype(np.int32, copy=False))
        self.splits.append(splits.astype(np.int8, copy=False))
        self.row_labels.append(labels.astype(np.int32, copy=False))

    def freeze(self) -> None:
        """The blocks joined into one array each."""
        for name, dtype in (("ids", np.int32), ("lengths", np.int32), ("splits", np.int8), ("row_labels", np.int32)):
            parts = getattr(self, name)
            setattr(self, name, [np.concatenate(parts) if parts else np.zeros(0, dtype)])

    @property
    def rows(self) -> np.ndarray:
        """(lengths, splits, labels) of every row, one int32 array of shape (rows, 3)."""
        return np.stack([self.lengths[0], self.splits[0].astype(np.int32), self.row_labels[0]], axis=1)

    def token_splits(self) -> np.ndarray:
        return np.repeat(self.splits[0], self.lengths[0])

    def scan(self) -> dict[str, Any]:
        """scan's record before normalization: raw word counts and label counts of the training
        rows, row counts of every split."""
        from ..readers.textfiles import TRAIN

        train = self.splits[0] == TRAIN
        counts = np.bincount(self.ids[0][self.token_splits() == TRAIN], minlength=len(self.words))
        words = {w: int(c) for w, c in zip(self.words, counts.tolist()) if c}
        labels = np.bincount(self.row_labels[0][train], minlength=len(self.labels))
        names = list(self.labels)
        rows = np.bincount(self.splits[0].astype(np.int64), minlength=3)
        return {"words": words, "labels": {str(names[i]): int(c) for i, c in enumerate(labels.tolist()) if c},
                "rows": {SPLIT_NAMES[k]: int(n) for k, n in enumerate(rows.tolist()) if n}}

    # ------------------------------------------------------------------ kept between the passes

    def save(self, path: Path, key: dict[str, Any]) -> None:
        """`<path>.ids.npy`, `<path>.rows.npy` and `<path>.json` (words, labels, the key), each
        written aside and renamed; the JSON last, so the set counts only once it names the key."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}-{os.getpid()}")
        for part, array in (("ids", self.ids[0]), ("rows", self.rows)):
            with open(f"{tmp}.{part}.npy", "wb") as f:
                np.save(f, array, allow_pickle=False)
        with open(f"{tmp}.json", "w", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "words": list(self.words), "labels": list(self.labels)}))
        for part in ("ids.npy", "rows.npy", "json"):
            os.replace(f"{tmp}.{part}", f"{path}.{part}")

    @classmethod
    def load(cls, path: Path, key: dict[str, Any]) -> PieceRows | None:
        """The kept rows, or None (absent, another piece's or file version's, or damaged: every
        id, count, split and label index checked against what the JSON names)."""
        from ..readers.npyfiles import load_npy

        try:
            with open(f"{path}.json", encoding="utf-8") as f:
                meta = json.load(f)
            if not isinstance(meta, dict) or meta.get("key") != key:
                return None
            words, labels = meta["words"], meta["labels"]
            if not isinstance(words, list) or not isinstance(labels, list) or \
                    not all(isinstance(w, str) for w in words) or not all(isinstance(x, str) for x in labels):
                return None
            ids, rows = load_npy(Path(f"{path}.ids.npy")), load_npy(Path(f"{path}.rows.npy"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if ids.dtype != np.int32 or ids.ndim != 1 or rows.dtype != np.int32 or rows.ndim != 2 or rows.shape[1] != 3:
            return None
        lengths, splits, row_labels = rows[:, 0], rows[:, 1], rows[:, 2]
        if (len(rows) and (lengths.min() < 0 or not 0 <= splits.min() <= splits.max() <= 2
                           or not 0 <= row_labels.min() <= row_labels.max() < len(labels))) \
                or int(lengths.sum(dtype=np.int64)) != len(ids) \
                or (len(ids) and not 0 <= int(ids.min()) <= int(ids.max()) < len(words)):
            return None
        out = cls({w: i for i, w in enumerate(words)}, {x: i for i, x in enumerate(labels)})
        out.ids, out.lengths, out.splits, out.row_labels = [ids], [lengths.copy()], [splits.astype(np.int8)], \
            [row_labels.copy()]
        if len(out.words) != len(words) or len(out.labels) != len(labels):
            return None  # a word or label twice: not a file scan wrote
        return out


class _Later:
    """`read_piece`'s side work without a spare core: each call runs on this thread when its
    result is asked for, so the blocks are read one after another as a serial loop reads them
    (one block in memory at a time, no thread competing with the other pieces' workers)."""

    def __init__(self, fn: Callable[..., Any] | None = None, *args: Any) -> None:
        self.fn, self.args, self.value = fn, args, None

    def __enter__(self) -> _Later:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Later:
        return _Later(fn, *args)

    def result(self) -> Any:
        if self.fn is not None:
            self.value, self.fn = self.fn(*self.args), None
        return self.value


def read_piece(blocks: Iterator[Block], rows: PieceRows, rule: str, slow_words: Callable[[list[str]], list[list[str]]],
               split_of: Callable[[Block, list[Any]], np.ndarray], threads: bool = False) -> PieceRows:
    """Every block's words as local ids (`ascii_tokens` for the rows it splits exactly,
    `slow_words` for the rest), its rows' splits (`split_of`) and labels, into `rows`.

    A piece is one process's work, so a file of one piece would run on one core.  With `threads`
    (the stream has at most half as many pieces as cores) a side thread reads the next block and
    runs its words' kernels (RE2 grammar check, Arrow's CSV parse, `chunk_codes`: C++ that
    releases the GIL) while this thread turns the current block's chunks into words (Python per
    distinct chunk), ids and splits (a blake2b per row).  The GIL-bound work stays here: a
    hash on the side thread competed with it for the GIL (10.8 MB: read 0.29 s that way, 0.26 s
    this way, 0.31 s on one thread).  Words and labels are interned here, block after block, so
    the local ids are those of a serial read: the same entry either way."""
    from concurrent.futures import ThreadPoolExecutor

    def ready() -> tuple[Block, Any] | None:  # the next block, and its words' kernels where every row is plain
        block = next(blocks, None)
        return None if block is None else (block, chunk_codes(block.texts) if block.plain else None)

    with ThreadPoolExecutor(1) if threads else _Later() as side:
        ahead = side.submit(ready)
        while (got := ahead.result()) is not None:
            block, coded = got
            texts = block.texts
            if len(texts) == 0:
                ahead = side.submit(ready)
                continue
            names = list(rows.labels)  # every label of this block is interned already (csv_blocks / python_blocks)
            ahead = side.submit(ready)  # one block read ahead at most
            fast = np.ones(len(texts), bool) if block.plain else fast_rows(texts)
            if fast.all():
                ids, lengths = _fast_ids(texts, rule, rows, coded)
            else:
                ids, lengths = _mixed_ids(texts, fast, rule, rows, slow_words)
            empty = np.flatnonzero(lengths == 0)  # every text Python's strip empties has no word
            if len(empty) and not all(text.strip() for text in texts.take(arrow_buffers.integers(empty)).to_pylist()):
                raise Fallback("an empty text (Python's error, or a blank line it skips)")
            rows.add(ids, lengths, split_of(block, names), block.labels)
    rows.freeze()
    return rows


def _fast_ids(texts: Any, rule: str, rows: PieceRows, coded: tuple[np.ndarray, Any] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    ids, words, lengths = ascii_tokens(texts, rule, coded)
    return rows.intern_words(words)[ids], lengths


def _mixed_ids(texts: Any, fast: np.ndarray, rule: str, rows: PieceRows,
               slow_words: Callable[[list[str]], list[list[str]]]) -> tuple[np.ndarray, np.ndarray]:
    """Ids of a block whose rows are partly split by the Python path, in row order."""
    lengths = np.zeros(len(texts), np.int64)
    fast_ids, fast_lengths = _fast_ids(texts.filter(arrow_buffers.booleans(fast)), rule, rows) if fast.any() else \
        (np.zeros(0, np.int32), np.zeros(0, np.int64))
    slow = slow_words(texts.filter(arrow_buffers.booleans(~fast)).to_pylist())
    slow_lengths = np.fromiter(map(len, slow), np.int64, count=len(slow))
    slow_ids = rows.intern_words([w for s in slow for w in s])
    lengths[fast], lengths[~fast] = fast_lengths, slow_lengths
    ids = np.empty(int(lengths.sum()), np.int32)
    from_fast = np.repeat(fast, lengths)
    ids[from_fast], ids[~from_fast] = fast_ids, slow_ids
    return ids, lengths


def id_table(words: list[str], index: dict[str, int], vocab: Any, lowercase: bool) -> np.ndarray:
    """local id -> the plan's id: ASCII words looked up as `table_words.flat_ids` does (Python's
    lower() is Rust's there), the others through the vocabulary's own tokenizer (its normalizer),
    one word at a time as `Vocab.encode_batch` looks each up."""
    from ..vocab import SPECIALS, UNK

    unk = index[SPECIALS[UNK]]
    table = np.empty(len(words), np.int64)
    other = []
    for i, w in enumerate(words):
        if w.isascii():
            table[i] = index.get(w.lower() if lowercase else w, unk)
        else:
            other.append(i)
    if other:
        encoded = vocab.encode_batch([[words[i]] for i in other])
        if any(len(e) != 1 for e in encoded):
            raise Fallback("a word the vocabulary's normalizer splits")
        table[other] = [e[0] for e in encoded]
    return table


def cut(values: np.ndarray, lengths: np.ndarray, limit: int | None, counts: dict[str, int]
        ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first `limit` values (the cut counted in `counts`, as the text_classify stream counts it)."""
    if limit and len(lengths) and int(lengths.max()) > limit:
        long = lengths[lengths > limit]
        counts["cut"] += int(len(long))
        counts["longest"] = max(counts["longest"], int(long.max()))
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        values = values[(np.arange(len(values)) - starts) < limit]
        lengths = np.minimum(lengths, limit)
    return values, lengths
