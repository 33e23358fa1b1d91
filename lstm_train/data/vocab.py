"""Word vocabularies trained on the train split with Hugging Face `tokenizers`, saved with the run.

A `Vocab` wraps a `tokenizers.Tokenizer` with a word-level model: the words a
task reads (already split into tokens by the data set: SST trees, CoNLL
columns, whitespace) map to ids, with four reserved ids first:

    0 <pad>   1 <unk>   2 <bos>   3 <eos>

Lower-casing is the tokenizer's normaliser, so training, resuming and `predict`
apply exactly the same rule.  The whole vocabulary is one JSON string
(`to_json`), small enough to live in `Splits.info` (hence in every checkpoint)
and written beside it as `<run dir>/vocab*.json` for people and tools; `digest`
tells a vocabulary file and a checkpoint apart when they do not belong together.

Subword vocabularies for translation use SentencePiece (see the translate task);
this module is the word-level one shared by classification and tagging.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
_SEP = "\n"  # words are joined with newlines for training: a word may hold spaces ("a. m.")


# The default cap on a trained vocabulary (data.max_vocab / max_size overrides it).
DEFAULT_MAX_SIZE = 100_000


class VocabError(ValueError):
    """A vocabulary file that cannot be used (unreadable, or not the one the checkpoint was trained with)."""


def normalize_counts(counts: dict[str, int], lowercase: bool) -> dict[str, int]:
    """Raw word counts as the trainer counts them: through the same normalizer (Rust's lower-casing,
    not Python's) and pre-tokenizer; bounded by the distinct words, not the text."""
    lower = normalizers.Lowercase() if lowercase else None
    out: dict[str, int] = {}
    for word, n in counts.items():
        if lower is not None:  # on ASCII, Python's lower() is Rust's: one Rust call per other word only
            word = word.lower() if word.isascii() else lower.normalize_str(word)
        if _SEP not in word:
            if word:
                out[word] = out.get(word, 0) + n
            continue
        for part in word.split(_SEP):
            if part:
                out[part] = out.get(part, 0) + n
    return out


class Vocab:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._json = tokenizer.to_str()
        self._itos: dict[int, str] = {i: w for w, i in tokenizer.get_vocab().items()}

    @classmethod
    def train(cls, sentences: Iterable[Sequence[str]], lowercase: bool = True, min_freq: int = 1,
              max_size: int | None = None) -> Vocab:
        """Every word seen at least `min_freq` times (at most `max_size` of the most frequent,
        specials included, DEFAULT_MAX_SIZE when not given: the vocabulary is copied into every
        checkpoint and sizes the embedding); the rest read as <unk>.  A vocabulary of only the
        special tokens is an error: every text would read as <unk>."""
        tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIALS[UNK]))
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Split(_SEP, behavior="removed")
        options = {"vocab_size": max_size or DEFAULT_MAX_SIZE}
        trainer = trainers.WordLevelTrainer(min_frequency=min_freq, special_tokens=SPECIALS, show_progress=False,
                                            **options)
        tokenizer.train_from_iterator((_SEP.join(words) for words in sentences), trainer)
        if tokenizer.get_vocab_size() <= len(SPECIALS):
            raise VocabError(
                f"data.min_freq={min_freq} leaves no word in the vocabulary (only {', '.join(SPECIALS)}): no word "
                "of the training texts occurs that often. Lower data.min_freq (1 keeps every word) or give more text.")
        return cls(tokenizer)

    @classmethod
    def from_counts(cls, counts: dict[str, int], lowercase: bool = True, min_freq: int = 1,
                    max_size: int | None = None) -> Vocab:
        """`train`'s vocabulary from word counts merged across pieces (a streamed preparation
        counts each piece apart): the same rule as tokenizers' WordLevelTrainer (specials first,
        then by count descending, ties by word), so the JSON and digest are `train`'s.  `counts`
        must be of normalized words (`normalize_counts`)."""
        ordered = sorted(((w, n) for w, n in counts.items() if n >= min_freq and w), key=lambda c: (-c[1], c[0]))
        words = SPECIALS + [w for w, _ in ordered]
        vocab: dict[str, int] = {}
        for i, word in enumerate(words[: max_size or DEFAULT_MAX_SIZE]):
            vocab[word] = i  # a word equal to a special overwrites it, as the trainer's map does
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS[UNK]))
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Split(_SEP, behavior="removed")
        tokenizer.add_special_tokens(SPECIALS)
        if tokenizer.get_vocab_size() <= len(SPECIALS):
            raise VocabError(
                f"data.min_freq={min_freq} leaves no word in the vocabulary (only {', '.join(SPECIALS)}): no word "
                "of the training texts occurs that often. Lower data.min_freq (1 keeps every word) or give more text.")
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str, source: str = "vocabulary") -> Vocab:
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception types
            raise VocabError(f"{source}: not a vocabulary file written by lstm_train ({e})") from None

    @classmethod
    def load(cls, path: Path) -> Vocab:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise VocabError(f"{path}: cannot read the vocabulary ({e.strerror})") from None
        return cls.from_json(text, str(path))

    def to_json(self) -> str:
        return self._json

    def save(self, path: Path) -> None:
        from .. import runfiles

        runfiles.write_atomic(Path(path), self._json)

    @property
    def digest(self) -> str:
        return hashlib.sha1(self._json.encode()).hexdigest()[:12]

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other._json == self._json

    def encode(self, words: Sequence[str]) -> list[int]:
        return self.tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False).ids if words else []

    def encode_batch(self, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
        """Many sentences at once (tokenizers encodes them in parallel, in Rust)."""
        encoded = self.tokenizer.encode_batch([list(s) for s in sentences], is_pretokenized=True,
                                              add_special_tokens=False)
        return [e.ids for e in encoded]

    def word(self, index: int) -> str:
        return self._itos.get(int(index), SPECIALS[UNK])

    def words(self, ids: Iterable[int]) -> list[str]:
        return [self.word(i) for i in ids]
