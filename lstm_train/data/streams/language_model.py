"""A language model's corpus prepared as a `Stream`: byte ranges, two passes, bounded memory.

The corpus (one or more UTF-8 files read in order as one text) is cut into pieces of about
`base.PIECE_BYTES` (`base.cut`) on line boundaries, and the split points (`val_fraction`, `test_fraction`)
are piece boundaries too, so every piece lies in one split.  The cut depends on the files
and the data section only, never on how many workers or shards prepare them, and no
tokenizer's output depends on where a piece ends (characters and bytes map one to one;
words and BPE are encoded line by line), so the entry is the same from 1 shard or N.

The fraction cut is nanoGPT's: the first (1 - val - test) of the corpus trains.  It is
taken in bytes and moved forward to the next character start (characters, bytes) or the
next line start (words, BPE: a word is never cut in two, which used to leave an
"outside the vocabulary" fragment).  For ASCII text the byte cut is the character cut.

Pass 1 (`scan`) counts what the vocabulary needs: code points for characters (vectorized:
`bytes.isascii` blocks through `np.bincount`, others through UTF-32 and `np.unique`),
words of the training pieces for words.  `plan` makes the vocabulary (characters: the
whole corpus, as nanoGPT and char-rnn; words: the training part plus <unk>, capped by
`data.max_vocab`, as pytorch/examples and AWD-LSTM; ids in frequency order, which the adaptive
softmax needs) or trains the BPE (`lm_tokenizer.train_bpe`, from
an iterator over the training text, at most `data.bpe_train_bytes` of it, as
sentencepiece's input_sentence_size bounds its input).  Pass 2 (`encode`) turns blocks of
`BLOCK_BYTES` into ids with the language model's one tokenizer (`lm_tokenizer.Tokenizer.
encode_block`: vectorized per block, the one predict and generate use on text) and appends them
to the split's flat column, in the smallest integer dtype that holds the vocabulary.

The corpus's files are named here too (`resolve_files`, `split_files`), and `text_lines` reads
a text to score (predict --file) as the corpus is read.

Nothing holds the corpus or a Python object per token: memory is a block plus the
vocabulary, whatever the corpus size.
"""

from __future__ import annotations

import glob as globbing
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..store.entry_format import EntryWriter
from ..lm_tokenizer import CorpusError, Tokenizer, compact_dtype, decode_utf8, train_bpe
from ..textio import utf8_lines
from .base import Piece, cut

BLOCK_BYTES = int(os.environ.get("LSTM_TRAIN_BLOCK_BYTES", 8 << 20))
MAX_LINE = 64 << 20  # words / BPE: more than this without a newline or a space is refused
DEFAULT_MAX_VOCAB = 500_000  # words without data.max_vocab: a bound (WikiText-103 has 267,735 words)
WORD_SPECIALS = ["<eos>", "<unk>"]
# The words vocabulary's order, in the prepared-data key of words entries only (chars, bytes and BPE
# keep their keys): entries made when it was alphabetical are not taken for frequency-ordered ones.
WORDS_ORDER = "frequency"
_BOM = b"\xef\xbb\xbf"
SPLITS = ("train", "val", "test")


def _char_start(data: bytes, i: int) -> int:
    """The first UTF-8 character start at or after i (continuation bytes are 0b10xxxxxx)."""
    while i < len(data) and (data[i] & 0xC0) == 0x80:
        i += 1
    return i


def _boundary(path: str, pos: int, size: int, unit: str) -> int:
    """The first `unit` boundary (char: a character start; line: just after a newline, or at a
    space where a line runs on for MAX_LINE) at or after byte `pos` of the file."""
    if pos <= 0 or pos >= size:
        return min(max(pos, 0), size)
    with open(path, "rb") as f:
        f.seek(pos - 1)
        if unit == "char":
            window = f.read(8)
            return pos - 1 + max(1, _char_start(window, 1))
        scanned = 0
        while scanned < MAX_LINE:
            window = f.read(1 << 20)
            if not window:
                return size
            newline = window.find(b"\n")
            if newline >= 0:
                return pos - 1 + scanned + newline + 1
            scanned += len(window)
        f.seek(pos - 1)
        window = f.read(1 << 20)
        space = max(window.find(b" "), window.find(b"\t"))
        if space < 0:
            raise CorpusError(f"{path}: more than {MAX_LINE >> 20} MB without a newline or a space after byte {pos}; "
                              "a words or BPE corpus must have lines (use data.tokenizer: chars or bytes)")
        return pos - 1 + space + 1


def resolve_files(spec: str | list[str], root: Path, key: str) -> list[Path]:
    """A file, a folder (its files, sorted), a glob, or a list of these, relative to `root`."""
    items = [spec] if isinstance(spec, str) else list(spec)
    found: list[Path] = []
    for item in items:
        path = Path(item) if Path(item).is_absolute() else root / item
        if any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in globbing.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"data.{key}: {path} matches no file")
            found += matches
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not matches:
                raise FileNotFoundError(f"data.{key}: the folder {path} holds no file")
            found += matches
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"data.{key}: {path}: no such file or folder")
    return found


def split_files(paths: list[Path], val_fraction: float, test_fraction: float) -> tuple[list[Path], ...]:
    """The last files validate (and test): at least one file each where a fraction is asked."""
    n_test = math.ceil(len(paths) * test_fraction) if test_fraction else 0
    n_val = max(1, math.ceil(len(paths) * val_fraction))
    if n_val + n_test >= len(paths):
        raise CorpusError(f"{len(paths)} file(s) cannot be split by files into train, validation"
                          f"{' and test' if n_test else ''}: give more files, data.val_files, or data.split: fraction")
    train = paths[: len(paths) - n_val - n_test]
    return train, paths[len(train) : len(train) + n_val], paths[len(train) + n_val :]


def text_lines(path: Path) -> Iterator[str]:
    """A text file to score, a line at a time (`textio.utf8_lines`: a line over 64 MiB refused once
    that much is read, so that no file is held whole), refused when empty as a corpus is."""
    empty = True
    for line in utf8_lines(path, CorpusError):
        empty = False
        yield line
    if empty:
        raise CorpusError(f"{path}: the file is empty; a language model needs text to read")


class LanguageModelStream:
    """The `Stream` of a `language_model` job's data section (see the module docstring)."""

    def __init__(self, data: Any) -> None:
        self.data = data  # the job's data section (pydantic: picklable)

    # -- pieces --------------------------------------------------------------------------

    def _files(self) -> dict[str, list[Path]]:
        data, root = self.data, Path(self.data.root)
        paths = resolve_files(data.files, root, "files")
        if data.val_files is not None:
            test = resolve_files(data.test_files, root, "test_files") if data.test_files else []
            return {"train": paths, "val": resolve_files(data.val_files, root, "val_files"), "test": test}
        if data.split == "files":
            train, val, test = split_files(paths, data.val_fraction, data.test_fraction)
            return {"train": train, "val": val, "test": test}
        return {"all": paths}

    def _ranges(self) -> list[tuple[str, str, int, int]]:
        """(split, file, start, end) ranges in corpus order, the fraction cut made a boundary."""
        unit = "char" if self.data.tokenizer in ("chars", "bytes") else "line"
        out = []
        for split, paths in self._files().items():
            spans = []
            for path in paths:
                size = path.stat().st_size
                with open(path, "rb") as f:
                    start = 3 if f.read(3) == _BOM else 0
                if size <= start:
                    raise CorpusError(f"{path}: the file is empty; a language model needs text to read")
                spans.append((str(path), start, size))
            if split != "all":
                out += [(split, *span) for span in spans]
                continue
            total = sum(e - s for _, s, e in spans)
            cuts = [int(total * (1 - self.data.val_fraction - self.data.test_fraction)),
                    int(total * (1 - self.data.test_fraction))]
            out += self._cut(spans, cuts, unit)
        return out

    def _cut(self, spans: list[tuple[str, int, int]], cuts: list[int], unit: str) -> list[tuple[str, str, int, int]]:
        """The spans cut at the global byte positions `cuts`, each moved to the next boundary."""
        out, before = [], 0
        for path, start, end in spans:
            size = os.path.getsize(path)
            points = [start]
            for at in cuts:
                local = start + at - before
                point = start if local <= start else end if local >= end else _boundary(path, local, size, unit)
                points.append(max(points[-1], min(point, end)))
            points.append(end)
            out += [(SPLITS[k], path, points[k], points[k + 1]) for k in range(3) if points[k + 1] > points[k]]
            before += end - start
        return out

    def pieces(self) -> list[Piece]:
        unit = "char" if self.data.tokenizer in ("chars", "bytes") else "line"
        pieces: list[Piece] = []
        for split, path, start, end in self._ranges():
            size = os.path.getsize(path)
            for a, b in cut(start, end, lambda pos, path=path, size=size: _boundary(path, pos, size, unit)):
                pieces.append(Piece(len(pieces), path, a, b, split))
        return pieces

    # -- reading -------------------------------------------------------------------------

    def _blocks(self, piece: Piece, unit: str) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) blocks of the piece, each ending on a `unit` boundary (char/line)."""
        end = piece.end if piece.end is not None else os.path.getsize(piece.path)
        with open(piece.path, "rb") as f:
            f.seek(piece.start)
            offset, carry = piece.start, b""
            while offset + len(carry) < end:
                chunk = f.read(min(BLOCK_BYTES, end - offset - len(carry)))
                if not chunk:
                    break
                data = carry + chunk
                cut = len(data) if offset + len(data) >= end else self._last_boundary(data, unit)
                if cut <= 0:
                    carry = data
                    if len(carry) > MAX_LINE:
                        raise CorpusError(f"{piece.path}: more than {MAX_LINE >> 20} MB without a line break or space "
                                          f"after byte {offset}; use data.tokenizer: chars or bytes for such text")
                    continue
                yield offset, data[:cut]
                offset, carry = offset + cut, data[cut:]
            if carry:
                yield offset, carry

    @staticmethod
    def _last_boundary(data: bytes, unit: str) -> int:
        """Where a block may end: after its last whole character (char) or line (line)."""
        if unit == "char":
            i = len(data) - 1
            while i > 0 and (data[i] & 0xC0) == 0x80 and len(data) - i < 4:
                i -= 1
            lead = data[i] if data else 0
            need = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            return len(data) if i + need <= len(data) else i
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) >= BLOCK_BYTES:  # a line longer than a block: cut before a space, so that
            cut = max(max(data.rfind(b" "), data.rfind(b"\t")), 0)  # memory stays a block (the encoder ends no line there)
        return cut

    # -- pass 1 --------------------------------------------------------------------------

    def scan(self, piece: Piece) -> dict[str, Any]:
        kind = self.data.tokenizer
        if kind == "chars":
            counts = np.zeros(128, dtype=np.int64)
            other: Counter[int] = Counter()
            for offset, block in self._blocks(piece, "char"):
                if block.isascii():
                    counts += np.bincount(np.frombuffer(block, np.uint8), minlength=128)
                    continue
                points = np.frombuffer(decode_utf8(piece.path, offset, block).encode("utf-32-le"), "<u4")
                found = np.bincount(points)
                other.update(dict(zip(np.flatnonzero(found).tolist(), found[found > 0].tolist())))
            for cp in np.flatnonzero(counts).tolist():
                other[cp] += int(counts[cp])
            return {"chars": {str(cp): n for cp, n in sorted(other.items())}}  # JSON keys: code points as text
        if kind == "words" and piece.split == "train":
            words: Counter[str] = Counter()
            for offset, block in self._blocks(piece, "line"):
                words.update(decode_utf8(piece.path, offset, block).split())
            return {"words": dict(words)}
        for offset, block in self._blocks(piece, "char"):  # bytes, BPE, non-train words: checked UTF-8
            if not block.isascii():
                decode_utf8(piece.path, offset, block)
        return {}

    # -- the plan ------------------------------------------------------------------------

    def plan(self, scan: dict[str, Any]) -> dict[str, Any]:
        kind = self.data.tokenizer
        if kind == "chars":
            return {"kind": kind, "vocab": [chr(cp) for cp in sorted(map(int, scan.get("chars", {})))]}
        if kind == "bytes":
            return {"kind": kind}
        if kind == "words":
            return {"kind": kind, "vocab": self._word_vocab(Counter(scan.get("words", {})))}
        return {"kind": kind, "bpe_json": train_bpe(self._training_lines(), self.data.vocab_size)}

    def _word_vocab(self, counts: Counter[str]) -> list[str]:
        """<eos>, <unk>, then the training words by count (most frequent first, ties by word): the
        order an adaptive softmax needs (its head holds the first ids), and the one `Vocab` uses."""
        limit = getattr(self.data, "max_vocab", None) or DEFAULT_MAX_VOCAB
        words = sorted((w for w in counts if w not in WORD_SPECIALS), key=lambda w: (-counts[w], w))
        return WORD_SPECIALS + words[: max(0, limit - len(WORD_SPECIALS))]

    def _training_lines(self) -> Iterator[list[str]]:
        budget = getattr(self.data, "bpe_train_bytes", 1 << 30)
        for piece in self.pieces():
            if piece.split != "train":
                continue
            for offset, block in self._blocks(piece, "line"):
                if budget <= 0:
                    return
                budget -= len(block)
                yield decode_utf8(piece.path, offset, block).splitlines(keepends=True)

    # -- pass 2 --------------------------------------------------------------------------

    def encode(self, piece: Piece, plan: dict[str, Any], out: EntryWriter) -> dict[str, Any]:
        tokenizer = Tokenizer.from_info(plan)
        column = out.dense(piece.split or "train", 0, compact_dtype(tokenizer.size))
        n, distinct = 0, set()
        unit = "char" if plan["kind"] in ("chars", "bytes") else "line"
        for offset, block in self._blocks(piece, unit):
            ids = tokenizer.encode_block(piece, offset, block)
            column.append(ids)
            n += len(ids)
            if len(distinct) < 2 and len(ids):  # two different tokens found: enough (`info` checks the corpus)
                distinct |= {int(ids.min()), int(ids.max())}
        return {"split": piece.split, "tokens": n, "distinct": sorted(distinct)[:2]}

    def info(self, plan: dict[str, Any], counts: list[dict[str, Any]]) -> dict[str, Any]:
        tokens = {s: sum(c["tokens"] for c in counts if c["split"] == s) for s in SPLITS}
        seen = {i for c in counts if c["split"] in ("train", None) for i in c.get("distinct", ())}
        if len(seen) < 2:
            files = getattr(self.data, "files", None) or "the corpus"
            what = "empty" if not seen else "one token repeated (only line breaks?)"
            raise CorpusError(f"data.files ({files}): the training text is {what}: nothing to learn (the loss would be "
                              "0 at once); give a corpus of text")
        tokenizer = {k: v for k, v in plan.items() if k in ("kind", "vocab", "bpe_json")}
        info = {"tokenizer": tokenizer, "vocab_size": Tokenizer.from_info(plan).size, "bptt": self.data.bptt,
                "train_tokens": tokens["train"], "val_tokens": tokens["val"]}
        if tokens["test"]:
            info["test_tokens"] = tokens["test"]
        return info


def encode_file(path: Path, plan: dict[str, Any]) -> np.ndarray:
    """The ids of one text file as a prepared corpus piece of it would hold them (int64): the same
    blocks and encoder, so the run's test text written as a file gives its test tokens; memory a
    block plus the ids (a line over MAX_LINE without a space is refused).  For `evaluate`."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file" + (" (it is a folder)" if path.exists() else ""))
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = 3 if f.read(3) == _BOM else 0
    if size <= start:
        raise CorpusError(f"{path}: the file is empty; a language model needs text to score")
    piece, tokenizer = Piece(0, str(path), start, size, "test"), Tokenizer.from_info(plan)
    hint = ": the model cannot score characters it never saw"
    unit = "char" if plan["kind"] in ("chars", "bytes") else "line"
    blocks = LanguageModelStream(None)._blocks(piece, unit)
    return np.concatenate([tokenizer.encode_block(piece, offset, block, hint).astype(np.int64) for offset, block in blocks])
