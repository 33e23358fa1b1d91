"""text_classify's Python path from texts to words and ids: the reference the column path
(table_columns.py) is tested against, and the fallback wherever that path cannot be exact.

ASCII texts are split by Python's `re` running the PTB word rule (`ascii_words`; a chunk
joined by a separator token and split in one pass, `flat_words`), other texts by the
`tokenizers` pre-tokenizer in one batched Rust call (`batch_tokenizer`), and words are
looked up in the vocabulary by a dict.  `Tokens` keeps scan's words as piece-local ids,
so encode only remaps them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import table_columns
from ..readers import textfiles
from .table_columns import WORDS_ASCII as _WORDS_ASCII
from ..vocab import SPECIALS, UNK, Vocab


SEP = "\x00"  # between texts: matched by [^\w\s] as a token of its own, never inside a word
_SEP_JOIN = f" {SEP} "


def flat_words(texts: list[str]) -> tuple[list[str], int] | None:
    """The words of a chunk of ASCII texts in one `re` pass over them joined by a separator
    token (the C loop, not one call per text), for the `words` rule; None where this path
    would not split exactly as `split_words` (non-ASCII, the separator or control characters
    in a text)."""
    joined = _SEP_JOIN.join(texts)
    if not joined.isascii() or joined.count(SEP) != len(texts) - 1 or "\x01" in joined or _CONTROL.search(joined):
        return None
    return _WORDS_ASCII.findall(joined), len(texts)


def flat_ids(flat: tuple[list[str], int], index: dict[str, int], lowercase: bool, limit: int | None,
             counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of the chunk's texts from its flat word list (separators -1), each text
    cut to `limit` words (the cut counted in `counts`)."""
    words, n = flat
    if lowercase:  # one C pass over all the words, not a lower() per word
        words = "\x01".join(words).lower().split("\x01")
    unk = index[SPECIALS[UNK]]
    ids = np.fromiter((index.get(w, unk) for w in words), dtype=np.int64, count=len(words))
    values, lengths = cut_flat(ids, limit, counts)
    assert len(lengths) == n
    return values, lengths


def cut_flat(ids: np.ndarray, limit: int | None, counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of flat ids whose texts are parted by -1, each cut to `limit` words."""
    seps = np.flatnonzero(ids == -1)
    bounds = np.concatenate([[-1], seps, [len(ids)]])
    lengths = np.diff(bounds) - 1
    return table_columns.cut(np.delete(ids, seps), lengths, limit, counts)


class Tokens:
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
    def load(cls, path: Path, key: dict[str, Any]) -> Tokens | None:
        """The kept tokens, or None (absent, another piece's or file version's, or damaged)."""
        try:
            with open(f"{path}.json", encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("key") != key:
                return None
            from ..readers.npyfiles import load_npy

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


def all_ascii(texts: list[str]) -> bool:
    return all(t.isascii() for t in texts)


def ascii_words(texts: list[str], rule: str) -> list[list[str]]:
    """split_words for ASCII texts through Python's `re` (C, no per-call tokenizers overhead): on
    ASCII, \\w, \\s and \\b mean the same in Python's ASCII mode and in Oniguruma, so the
    matches are the pre-tokenizer's; whitespace and U+001C-U+001F dropped as split_words drops them."""
    if rule == "words":
        return [[w for w in _WORDS_ASCII.findall(t) if w.strip()] for t in texts]
    return [ws_split(t) for t in texts]


def ws_split(text: str) -> list[str]:
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


def exact(texts: list[str], rule: str) -> bool:
    """Whether `batch_tokenizer` splits these texts exactly as split_words does (see there)."""
    return rule == "words" or not any(_CONTROL.search(t) for t in texts)


def batch_tokenizer(vocab_json: str | None, rule: str) -> Any:
    """A `tokenizers.Tokenizer` that splits raw texts exactly as `textfiles.split_words` does and
    (given a vocabulary's JSON) looks the words up as `Vocab.encode_batch` does, in one batched
    Rust call.  split_words drops the regex's whitespace runs and any word that `str.strip`
    empties: WhitespaceSplit drops the former; the only characters Python strips that Unicode
    (hence Rust) does not call whitespace, U+001C-U+001F, are made spaces first (the "words"
    rule: there they are words of their own; under "whitespace" a chunk holding one takes the
    slow path, `exact`).  Without a vocabulary, an empty WordLevel model: only the offsets
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
