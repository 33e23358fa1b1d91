"""The tag task's preparation as a `Stream` (see streams/base.py): CoNLL-U and whitespace-column files.

One piece per file (train, val, test: each file is one split).  A file is read one sentence
at a time (`conll.iter_tagged`: the same checks and messages as `read_tagged`, file and line
named) and encoded CHUNK sentences at a time, so memory holds a chunk, never a file.

Pass 1 (`scan`) counts what the vocabularies are built from, bounded by the vocabulary and
not the corpus: the training file's word forms (raw, cased: the word vocabulary is their
normalized counts, the character vocabulary counts each character once per distinct form,
the way the in-memory preparation it replaced did) and every split's tag counts.  `plan` builds
the `Vocab`s, tag list (most frequent first), unseen tags and character width (`Vocab.from_counts`
gives `Vocab.train`'s JSON); pass 2 (`encode`) encodes each chunk as `tagging.encode` does (in numpy).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..readers import conll
from ..store.entry_format import EntryWriter
from .base import Piece, chunks
from ..vocab import BOS, EOS, UNK, Vocab, normalize_counts
from ...messages import note

CHUNK = 4096  # sentences encoded and written at a time


class TagStream:
    """The tag task's Stream: the job's data section as plain values (picklable); `is_bio` the
    task's rule for the tagging scheme and `invalid_transitions` its count of I- tags that start an
    entity (module-level functions: data/ does not import tasks/)."""

    def __init__(self, data: Any, is_bio: Callable[[list[str]], bool],
                 invalid_transitions: Callable[[Any], int]) -> None:
        self.files = {name: str(data.path(name)) for name in ("train", "val", "test") if getattr(data, name)}
        self.format, self.column, self.lowercase = data.format, data.column, bool(data.lowercase)
        self.min_freq, self.max_chars, self.scheme = data.min_freq, data.max_chars, data.scheme
        self.is_bio, self.invalid_transitions = is_bio, invalid_transitions

    def pieces(self) -> list[Piece]:
        return [Piece(i, path, split=split) for i, (split, path) in enumerate(self.files.items())]

    def _sentences(self, piece: Piece) -> Any:
        return conll.iter_tagged(Path(piece.path), self.format, self.column)

    def scan(self, piece: Piece) -> dict[str, Any]:
        """Tag counts of the piece's split; the training file's raw word-form counts."""
        forms: Counter[str] = Counter()
        tags: Counter[str] = Counter()
        train = piece.split == "train"
        for sentence in self._sentences(piece):
            if train:
                forms.update(sentence.words)
            tags.update(sentence.tags or [])
        return {"forms": dict(forms), "tags": {str(piece.split): dict(tags)}}

    def plan(self, scan: dict[str, Any]) -> dict[str, Any]:
        """The vocabularies, tag list, unseen tags and character width."""
        forms: dict[str, int] = scan["forms"]
        train_tags = scan["tags"].get("train", {})
        tags = [t for t, _ in sorted(train_tags.items(), key=lambda kv: (-kv[1], kv[0]))]
        words = Vocab.from_counts(normalize_counts(forms, self.lowercase), self.lowercase, self.min_freq)
        chars: Counter[str] = Counter()
        for form in forms:  # each character once per distinct form
            chars.update(form)
        char_vocab = Vocab.from_counts(normalize_counts(dict(chars), False), False)
        width = min(max((len(f) for f in forms), default=1) + 2, self.max_chars)
        known, unseen = set(tags), Counter()
        for split in ("val", "test"):
            unseen.update({t: n for t, n in scan["tags"].get(split, {}).items() if t not in known})
        return {"words": words.to_json(), "chars": char_vocab.to_json(), "tags": tags, "unseen_tags": sorted(unseen),
                "char_width": width}

    def encode(self, piece: Piece, plan: dict[str, Any], out: EntryWriter) -> dict[str, Any]:
        """The piece's (words, chars, tags) columns, CHUNK sentences at a time; the training split's
        word-id counts (for word dropout); the sizes `report` says."""
        words, chars = _vocab(plan["words"]), _vocab(plan["chars"])
        all_tags, width, split = plan["tags"] + plan["unseen_tags"], plan["char_width"], str(piece.split)
        counts = np.zeros(len(words), dtype=np.int64)
        tag_counts = np.zeros(len(all_tags) + 1, dtype=np.int64)
        sizes = {"sentences": 0, "words": 0, "unknown": 0, "odd": 0}
        writers = None
        tag_index = {t: i for i, t in enumerate(all_tags)}
        for chunk in chunks(self._sentences(piece), CHUNK):
            columns = _encode(chunk, words, chars, tag_index, width)
            if writers is None:
                writers = [out.ragged(split, i, c.dtype, tuple(c.shape[1:])) for i, c in enumerate(columns)]
            lengths = np.array([len(s.words) for s in chunk], dtype=np.int64)
            for writer, column in zip(writers, columns):
                writer.append_flat(column, lengths)
            if split == "train":
                counts += np.bincount(columns[0].astype(np.int64), minlength=len(words))
            tag_counts += np.bincount(columns[2].astype(np.int64), minlength=len(tag_counts))
            sizes["sentences"] += len(chunk)
            sizes["words"] += len(columns[0])
            sizes["unknown"] += int((columns[0] == UNK).sum())
            sizes["odd"] += self.invalid_transitions(s.tags or [] for s in chunk)
        unseen = {t: int(n) for t, n in zip(plan["unseen_tags"], tag_counts[len(plan["tags"]):]) if n}
        return {"split": split, "word_counts": counts.tolist() if split == "train" else None,
                "sizes": sizes, "unseen": unseen}

    def info(self, plan: dict[str, Any], counts: list[dict[str, Any]]) -> dict[str, Any]:
        word_counts = next(c["word_counts"] for c in counts if c["split"] == "train")
        scheme = self.scheme if self.scheme != "auto" else ("bio" if self.is_bio(plan["tags"]) else "none")
        train = Path(self.files["train"])
        splits = {c["split"]: c["sizes"] for c in counts}
        unseen: Counter[str] = Counter()
        for c in counts:
            unseen.update(c["unseen"])
        report(splits, len(_vocab(plan["words"])), plan["tags"], dict(unseen), scheme)
        return {
            "words": plan["words"], "chars": plan["chars"], "tags": plan["tags"], "unseen_tags": plan["unseen_tags"],
            "char_width": plan["char_width"], "scheme": scheme, "word_counts": word_counts,
            "format": conll.detect_format(train) if self.format == "auto" else self.format,
            "column": self.column, "primary_metric": "entity_f1" if scheme == "bio" else "accuracy",
        }


def report(splits: dict[str, dict[str, int]], vocab_size: int, tags: list[str], unseen: dict[str, int],
           scheme: str) -> None:
    """One summary of the data, from each split's {sentences, words, unknown (unseen words), odd
    (I- tags that start an entity)}: sizes, unseen words, unseen tags, BIO oddities; the same
    lines whichever path prepared it."""
    say = lambda text: note(f"tag: {text}")  # noqa: E731
    for name, n in splits.items():
        if name == "train":
            say(f"train {n['sentences']} sentences, {n['words']} words, {len(tags)} tags, vocabulary {vocab_size} "
                f"words, scheme {scheme}")
        else:
            say(f"{name} {n['sentences']} sentences, {n['words']} words, {n['unknown'] / max(n['words'], 1):.1%} "
                "unseen in training")
    if unseen:
        listed = ", ".join(f"{t} ({c})" for t, c in sorted(unseen.items(), key=lambda kv: -kv[1]))
        say(f"tags never seen in training (counted as errors, reported as unseen_tag_tokens): {listed}")
    if scheme == "bio":
        for name, n in splits.items():
            if n["odd"]:
                say(f"{name}: {n['odd']} I- tags do not continue an entity of their type (after O, another type or "
                    "at a sentence start): counted as the start of an entity, as conlleval and seqeval do")


def _encode(sentences: list[conll.TaggedSentence], words: Vocab, chars: Vocab, tag_index: dict[str, int],
            width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`tagging.encode`'s (words, chars, tags) values in numpy: a worker process forked after the
    parent ran torch's thread pool can hang inside torch, never inside numpy."""
    flat = [w for s in sentences for w in s.words]
    word_ids = np.fromiter((i for ids in words.encode_batch([s.words for s in sentences]) for i in ids),
                           dtype=np.int32, count=len(flat))
    forms = sorted(set(flat))
    room = width - 2
    clipped = [list(f) if len(f) <= room else list(f[: (room + 1) // 2] + f[len(f) - room // 2:]) for f in forms]
    table = np.zeros((len(forms), width), dtype=np.int16 if len(chars) < 2**15 else np.int32)
    for row, encoded in enumerate(chars.encode_batch(clipped) if clipped else []):
        table[row, : len(encoded) + 2] = [BOS, *encoded, EOS]
    index = {form: i for i, form in enumerate(forms)}
    char_ids = table[np.fromiter((index[w] for w in flat), dtype=np.int64, count=len(flat))]
    unseen = len(tag_index)
    tag_ids = np.fromiter((tag_index.get(t, unseen) for s in sentences for t in (s.tags or [None] * len(s.words))),
                          dtype=np.int16 if unseen < 2**15 else np.int32, count=len(flat))
    return word_ids, char_ids, tag_ids


@functools.lru_cache(maxsize=4)
def _vocab(text: str) -> Vocab:
    return Vocab.from_json(text)
