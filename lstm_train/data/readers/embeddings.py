"""Pretrained word vectors from a text file in the GloVe or word2vec format.

One word per line followed by its vector, fields separated by spaces:

    the 0.418 0.24968 -0.41242 ...

word2vec's text format adds a first line "<words> <dimension>", which is read
and checked.  Only the words of the run's vocabulary are kept (the files hold
hundreds of thousands), matched exactly first and then lower-cased, so a cased
file serves a lower-cased vocabulary.  A few GloVe files hold words with spaces
in them: the vector is always the last `dim` fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .textfiles import TextDataError
from ..vocab import SPECIALS, Vocab


@dataclass
class Pretrained:
    vectors: torch.Tensor  # float32 [len(vocab), dim]; rows of words not found are zero
    found: torch.Tensor  # bool [len(vocab)]
    path: str

    @property
    def coverage(self) -> float:
        words = len(self.found) - len(SPECIALS)
        return float(self.found[len(SPECIALS):].sum()) / max(words, 1)

    def summary(self) -> str:
        words = len(self.found) - len(SPECIALS)
        hits = int(self.found[len(SPECIALS):].sum())
        return f"embeddings: {hits:,} of {words:,} vocabulary words found in {self.path} ({100 * self.coverage:.1f}%)"


def read_vectors(path: str | Path, vocab: Vocab, dim: int) -> Pretrained:
    """The vectors of `vocab`'s words from `path`; dimension and every line checked
    (`dim` is `model.embedding_dim`).  Words not found keep zero rows here; the model
    initialises them at random."""
    path = Path(path).expanduser()
    wanted: dict[str, int] = {}
    for index in range(len(SPECIALS), len(vocab)):
        wanted[vocab.word(index)] = index
    vectors = torch.zeros(len(vocab), dim)
    exact = torch.zeros(len(vocab), dtype=torch.bool)
    found = torch.zeros(len(vocab), dtype=torch.bool)
    lowercase = all(w == w.lower() for w in wanted)  # a lower-cased vocabulary matches any case
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (model.embeddings.path)") from None
    file_dim = None
    with handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TextDataError(f"{path}:{lineno}: not UTF-8 ({e.reason} at column {e.start + 1})") from None
            fields = line.rstrip("\r\n").rstrip(" ").split(" ")
            if fields == [""]:
                continue
            if lineno == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):  # word2vec's header
                file_dim = int(fields[1])
            elif file_dim is None:  # GloVe: the first vector says the dimension
                file_dim = len(fields) - 1
            if file_dim != dim:
                raise TextDataError(
                    f"{path}:{lineno}: vectors of dimension {file_dim}, but model.embedding_dim is {dim}; "
                    f"set model.embedding_dim={file_dim} or use a file of {dim}-dimensional vectors"
                )
            if lineno == 1 and len(fields) == 2:
                continue
            if len(fields) < dim + 1:
                raise TextDataError(f"{path}:{lineno}: a word and {dim} numbers expected, found {len(fields)} fields")
            word = " ".join(fields[:-dim])
            index = wanted.get(word)
            is_exact = index is not None
            if index is None and lowercase:
                index = wanted.get(word.lower())
            if index is None or exact[index] or (found[index] and not is_exact):
                continue  # not a vocabulary word, or an exact-case vector is already in
            try:
                vectors[index] = torch.tensor([float(f) for f in fields[-dim:]])
            except ValueError:
                raise TextDataError(f"{path}:{lineno}: not a number among the {dim} values of {word!r}") from None
            found[index] = True
            exact[index] |= is_exact
    return Pretrained(vectors, found, str(path))

