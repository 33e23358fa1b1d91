"""A language model's data: users' text files read, split and turned into one flat token column.

A corpus is one or more UTF-8 files (a list, a folder, or a glob) read in order as one
stream of text.  It is split by files (`val_files`/`test_files`, or the last files of the
list) or by fraction of the stream (the first 90% trains, the rest validates, as nanoGPT
splits tinyshakespeare), then tokenized as characters, bytes, whitespace words (with an
<eos> per line, as pytorch/examples and AWD-LSTM read WikiText and PTB) or subwords (a
`tokenizers` byte-level BPE trained on the training part only).  Each split is one flat
integer array of the smallest dtype that holds the vocabulary: the layout nanoGPT's
train.bin and the prepared-data store map.

Everything the model and `generate` need to turn text into ids and back is a JSON dict
(`Tokenizer.info`), kept in the run's task info, so nothing here is ever unpickled.
"""

from __future__ import annotations

import glob as globbing
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .textio import utf8_lines


class CorpusError(ValueError):
    """A corpus that cannot be used: the message names the file or key and what would do."""


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


def text_lines(path: Path) -> Iterator[str]:
    """A text file to score, a line at a time (`textio.utf8_lines`: a line over 64 MiB refused once
    that much is read, so that no file is held whole), refused when empty as a corpus is."""
    empty = True
    for line in utf8_lines(path, CorpusError):
        empty = False
        yield line
    if empty:
        raise CorpusError(f"{path}: the file is empty; a language model needs text to read")


ENCODE_GROUP_CHARS = 4 << 20  # `Tokenizer.encode_lines`: characters encoded at once, at most about this many


@dataclass
class Tokenizer:
    """Text <-> token ids for one of the four kinds; built from the training text, rebuilt from `info`."""

    kind: str  # chars, bytes, words, bpe
    vocab: list[str] | None = None  # chars, words
    bpe_json: str | None = None

    @classmethod
    def train(cls, kind: str, train_text: str, all_text: str, vocab_size: int) -> Tokenizer:
        """chars and words take the vocabulary of the whole corpus (nanoGPT, pytorch/examples);
        BPE learns its merges from the training text alone."""
        if kind == "chars":
            return cls(kind, sorted(set(all_text)))
        if kind == "bytes":
            return cls(kind)
        if kind == "words":  # frequency order, as the prepared vocabulary (data/streams/language_model.py)
            counts = Counter(w for line in all_text.splitlines() for w in line.split() if w != "<eos>")
            return cls(kind, ["<eos>", *sorted(counts, key=lambda w: (-counts[w], w))])
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(train_text.splitlines(keepends=True), trainer)
        return cls(kind, bpe_json=tok.to_str())

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

    def _bpe(self):
        if not hasattr(self, "_hf"):
            from tokenizers import Tokenizer as HFTokenizer

            self._hf = HFTokenizer.from_str(self.bpe_json)
        return self._hf

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """Ids of `text` (int64).  Characters or words outside a vocabulary are an error naming them."""
        if self.kind == "bytes":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        if self.kind == "bpe":
            lines = text.splitlines(keepends=True)
            chunks = ["".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
            return np.array([i for e in self._bpe().encode_batch(chunks) for i in e.ids], dtype=np.int64)
        index = {s: i for i, s in enumerate(self.vocab)}
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


def split_files(paths: list[Path], val_fraction: float, test_fraction: float) -> tuple[list[Path], ...]:
    """The last files validate (and test): at least one file each where a fraction is asked."""
    n_test = math.ceil(len(paths) * test_fraction) if test_fraction else 0
    n_val = max(1, math.ceil(len(paths) * val_fraction))
    if n_val + n_test >= len(paths):
        raise CorpusError(f"{len(paths)} file(s) cannot be split by files into train, validation"
                          f"{' and test' if n_test else ''}: give more files, data.val_files, or data.split: fraction")
    train = paths[: len(paths) - n_val - n_test]
    return train, paths[len(train) : len(train) + n_val], paths[len(train) + n_val :]
