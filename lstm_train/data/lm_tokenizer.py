"""The language model's tokenizer: text <-> token ids, one class for prepare, evaluate, predict and generate.

Four kinds: characters, bytes, whitespace words (with an <eos> per line, as pytorch/examples
and AWD-LSTM read WikiText and PTB) and subwords (a `tokenizers` byte-level BPE, trained by
`train_bpe`: the one place its trainer settings are written).  Everything needed to turn text
into ids and back is a JSON dict (`Tokenizer.info`, the prepared plan's own keys), kept in the
run's task info, so nothing here is ever unpickled.

Two ways in, one vocabulary:

- `encode_block` (the prepared corpus, `evaluate`'s test file): a block of a file's bytes,
  vectorized: a code-point lookup table (characters), `np.frombuffer` (bytes), a dict per word
  (an unknown word is <unk>), `encode_batch` (BPE); a character outside the vocabulary is an
  error naming the file and the byte;
- `encode` / `encode_lines` (predict's text, generate's prompt): text, with a character or word
  outside the vocabulary an error naming it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .streams.base import Piece
from .textio import decode_block


class CorpusError(ValueError):
    """A corpus that cannot be used: the message names the file or key and what would do."""


ENCODE_GROUP_CHARS = 4 << 20  # `Tokenizer.encode_lines`: characters encoded at once, at most about this many


def compact_dtype(vocab_size: int) -> np.dtype:
    """The smallest integer dtype of a column of ids below `vocab_size` (nanoGPT's train.bin layout)."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.int16 if vocab_size <= 32767 else np.int32)


def train_bpe(lines: Iterable[Any], vocab_size: int) -> str:
    """A byte-level BPE trained on `lines` (texts, or lists of texts), as its JSON: no prefix space,
    the 256 byte symbols always in the alphabet, `<unk>` the one special token."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    return tok.to_str()


def decode_utf8(path: str, offset: int, block: bytes) -> str:
    """A block of a corpus file as text; not UTF-8: a CorpusError naming the file, line and byte."""
    return decode_block(path, offset, block, CorpusError)


@dataclass
class Tokenizer:
    """Text <-> token ids for one of the four kinds; made by a corpus's plan, rebuilt from `info`."""

    kind: str  # chars, bytes, words, bpe
    vocab: list[str] | None = None  # chars, words
    bpe_json: str | None = None

    @classmethod
    def train(cls, kind: str, train_text: str, all_text: str, vocab_size: int) -> Tokenizer:
        """A tokenizer of in-memory text (tests, benchmarks): chars and words take the vocabulary of
        the whole text, BPE learns its merges from the training text alone."""
        if kind == "chars":
            return cls(kind, sorted(set(all_text)))
        if kind == "bytes":
            return cls(kind)
        if kind == "words":  # frequency order, as the prepared vocabulary (streams/language_model.py)
            counts = Counter(w for line in all_text.splitlines() for w in line.split() if w != "<eos>")
            return cls(kind, ["<eos>", *sorted(counts, key=lambda w: (-counts[w], w))])
        return cls(kind, bpe_json=train_bpe(train_text.splitlines(keepends=True), vocab_size))

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Tokenizer:
        return cls(info["kind"], info.get("vocab"), info.get("bpe_json"))

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.vocab is not None:
            out["vocab"] = self.vocab
        if self.bpe_json is not None:
            out["bpe_json"] = self.bpe_json
        return out

    @property
    def size(self) -> int:
        if self.kind == "bytes":
            return 256
        if self.kind == "bpe":
            return self._bpe().get_vocab_size()
        return len(self.vocab)

    def _bpe(self):  # noqa: ANN202 - a tokenizers.Tokenizer, made once
        if not hasattr(self, "_hf"):
            from tokenizers import Tokenizer as HFTokenizer

            self._hf = HFTokenizer.from_str(self.bpe_json)
        return self._hf

    def _index(self) -> dict[str, int]:
        if not hasattr(self, "_ids"):
            self._ids = {s: i for i, s in enumerate(self.vocab)}
        return self._ids

    # -- text ----------------------------------------------------------------------------

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """Ids of `text` (int64).  Characters or words outside a vocabulary are an error naming them."""
        if self.kind == "bytes":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        if self.kind == "bpe":
            lines = text.splitlines(keepends=True)
            chunks = ["".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
            return np.array([i for e in self._bpe().encode_batch(chunks) for i in e.ids], dtype=np.int64)
        index = self._index()
        items = list(text) if self.kind == "chars" else [w for line in text.splitlines()
                                                          for w in (*line.split(), "<eos>")]
        unknown = sorted({s for s in items if s not in index})
        if unknown:
            shown = ", ".join(repr(s) for s in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise CorpusError(f"{what} has {len(unknown)} {'character' if self.kind == 'chars' else 'word'}(s) outside "
                              f"the model's vocabulary of {len(self.vocab)}: {shown}")
        return np.array([index[s] for s in items], dtype=np.int64)

    def encode_lines(self, lines: Iterable[str], what: str = "text") -> Iterator[np.ndarray]:
        """The ids of the text `lines` make up (each with its line end), a group of lines at a time,
        so that a long text is never held whole: the ids `encode` gives the joined text (which cuts
        a BPE text into groups of 1000 lines too; a group is also cut after ENCODE_GROUP_CHARS)."""
        group: list[str] = []
        size = 0
        for line in lines:
            for piece in line.splitlines(keepends=True):  # encode's own lines
                group.append(piece)
                size += len(piece)
                if len(group) == 1000 or size >= ENCODE_GROUP_CHARS:
                    yield self.encode("".join(group), what)
                    group, size = [], 0
        if group:
            yield self.encode("".join(group), what)

    def decode(self, ids: list[int]) -> str:
        if self.kind == "bytes":
            return bytes(ids).decode("utf-8", errors="replace")
        if self.kind == "bpe":
            return self._bpe().decode(ids)
        if self.kind == "words":
            return " ".join(self.vocab[i] for i in ids).replace(" <eos> ", "\n").replace("<eos>", "\n")
        return "".join(self.vocab[i] for i in ids)

    # -- a corpus's bytes ----------------------------------------------------------------

    def _table(self) -> tuple[np.ndarray, int]:
        """code point -> id, in the column's own dtype; the dtype's largest value marks "no id"."""
        if not hasattr(self, "_points"):
            dtype = compact_dtype(len(self.vocab) + 1)
            missing = int(np.iinfo(dtype).max)
            table = np.full(0x110000, missing, dtype=dtype)
            table[[ord(c) for c in self.vocab]] = np.arange(len(self.vocab))
            self._points = (table, missing)
        return self._points

    def _word_ids(self, lines: list[str], ended: bool) -> Iterator[int]:
        index = self._index()
        unk, eos, last = index["<unk>"], index["<eos>"], len(lines) - 1
        for k, line in enumerate(lines):
            yield from (index.get(w, unk) for w in line.split())
            if k < last or ended:
                yield eos

    def encode_block(self, piece: Piece, offset: int, block: bytes,
                     hint: str = " (the file changed while it was prepared?)") -> np.ndarray:
        """The ids of a block of `piece`'s bytes (from byte `offset`, ending on a character start;
        words and BPE: on a line end, or before a space inside a line too long for a block)."""
        if self.kind == "bytes":
            if not block.isascii():
                decode_utf8(piece.path, offset, block)
            return np.frombuffer(block, np.uint8)
        if self.kind == "chars":
            points = np.frombuffer(block, np.uint8) if block.isascii() else \
                np.frombuffer(decode_utf8(piece.path, offset, block).encode("utf-32-le"), "<u4")
            table, missing = self._table()
            ids = table[points]
            if (ids == missing).any():
                unknown = sorted({chr(int(p)) for p in points[ids == missing][:1000]})
                raise CorpusError(f"{piece.path}: {len(unknown)} character(s) outside the vocabulary of "
                                  f"{len(self.vocab)} near byte {offset}: {unknown[:10]}{hint}")
            return ids
        lines = decode_utf8(piece.path, offset, block).splitlines(keepends=True)
        if self.kind == "words":  # <eos> after each line; not after a block cut inside one (before a space)
            end = piece.end if piece.end is not None else os.path.getsize(piece.path)
            ended = offset + len(block) >= end or (lines and lines[-1].splitlines()[0] != lines[-1])
            return np.fromiter(self._word_ids(lines, ended), dtype=np.int64)
        encoded = self._bpe().encode_batch(lines, add_special_tokens=False)
        return np.fromiter((i for e in encoded for i in e.ids), dtype=np.int64)
