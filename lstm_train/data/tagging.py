"""Tagged sentences as tensor columns: word ids, character ids and tag ids, all `Ragged`.

Three columns of the same shape per sentence, made once at load time:

* words: ids in the lower-cased word `Vocab` (trained on the train split);
* chars: for each token its characters' ids (cased `Vocab` of single characters)
  as one fixed-width row, `<bos> c1 ... cn <eos>` then padding, so the column is a
  Ragged of [tokens, width] rows and a batch pads to [B, T, width] in the same
  gather as the other columns (no per-sample Python in the training loop).  A word
  longer than the width keeps its first and last characters (prefixes and
  suffixes carry the tag evidence), dropping the middle;
* tags: ids in the train split's tag list; a tag the train split never had gets
  id `len(tags)`, which no model output has: counted wrong and reported, never a crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from .readers.conll import TaggedSentence
from .ragged import Ragged
from .vocab import BOS, EOS, Vocab


def encode_chars(words: Sequence[str], chars: Vocab, width: int) -> torch.Tensor:
    """[len(words), width] char ids: <bos> chars <eos> then 0; distinct forms encoded once."""
    forms = sorted(set(words))
    index = {form: i for i, form in enumerate(forms)}
    room = width - 2
    clipped = [list(f) if len(f) <= room else list(f[: (room + 1) // 2] + f[len(f) - room // 2 :]) for f in forms]
    ids = chars.encode_batch(clipped) if clipped else []
    table = torch.zeros(len(forms), width, dtype=torch.int16 if len(chars) < 2**15 else torch.int32)
    for row, encoded in enumerate(ids):
        table[row, : len(encoded) + 2] = torch.tensor([BOS, *encoded, EOS], dtype=table.dtype)
    return table[torch.tensor([index[w] for w in words], dtype=torch.long)]


def encode(sentences: Sequence[TaggedSentence], words: Vocab, chars: Vocab, tags: Sequence[str],
           width: int) -> tuple[Ragged, Ragged, Ragged]:
    """The (words, chars, tags) columns of a split; tags all `len(tags)` when the file had none."""
    lengths = torch.tensor([len(s.words) for s in sentences], dtype=torch.long)
    word_ids = words.encode_batch([s.words for s in sentences])
    flat_words = [w for s in sentences for w in s.words]
    tag_index = {t: i for i, t in enumerate(tags)}
    unseen = len(tags)
    tag_ids = [tag_index.get(t, unseen) for s in sentences for t in (s.tags or [None] * len(s.words))]
    word_column = Ragged.from_lengths(torch.tensor([i for ids in word_ids for i in ids], dtype=torch.int32), lengths)
    char_column = Ragged.from_lengths(encode_chars(flat_words, chars, width), lengths)
    tag_column = Ragged.from_lengths(torch.tensor(tag_ids, dtype=torch.int16 if unseen < 2**15 else torch.int32),
                                     lengths)
    return word_column, char_column, tag_column


def unseen_tags(sentences: Sequence[TaggedSentence], known: Sequence[str]) -> Counter[str]:
    """Tags of an evaluation split that training never had, with their token counts."""
    known_set = set(known)
    return Counter(t for s in sentences for t in (s.tags or []) if t not in known_set)
