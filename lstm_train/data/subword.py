"""Subword vocabularies for translation: SentencePiece trained on the train split, saved with the run.

Translation reads and writes open-vocabulary text: a word-level vocabulary
would turn every rare name and compound ("Antriebsradsystem") into <unk>, and
<unk> cannot be detokenised.  SentencePiece (unigram or BPE) splits raw text
into pieces from a vocabulary of a chosen size, with no pre-tokenisation, and
`decode` gives back plain detokenised text: what sacreBLEU wants to score.

Ids follow the word vocabulary's convention (`lstm_train.data.vocab`):

    0 <pad>   1 <unk>   2 <bos>   3 <eos>

A trained model is one small protobuf (~250 kB for 8k pieces): `to_base64`
puts it in `Splits.info`, so every checkpoint carries the exact vocabulary,
and `save` writes it beside the checkpoints as `<name>.model` (SentencePiece's
own file format, readable by `spm_decode` or any SentencePiece binding).
`digest` tells a vocabulary file and a checkpoint apart when they do not
belong together.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import sentencepiece as spm

from .vocab import BOS, EOS, PAD, UNK, VocabError

__all__ = ["BOS", "EOS", "PAD", "UNK", "SubwordVocab", "VocabError"]


class SubwordVocab:
    """A SentencePiece model held in memory (no files needed to train, encode or decode)."""

    def __init__(self, proto: bytes, source: str = "subword vocabulary") -> None:
        self.proto = bytes(proto)
        try:
            self.processor = spm.SentencePieceProcessor(model_proto=self.proto)
        except Exception as e:  # noqa: BLE001 - SentencePiece raises RuntimeError/OSError on bad protos
            raise VocabError(f"{source}: not a SentencePiece model ({e})") from None
        if len(self) < 5 or [self.processor.pad_id(), self.processor.unk_id(), self.processor.bos_id(),
                             self.processor.eos_id()] != [PAD, UNK, BOS, EOS]:
            raise VocabError(f"{source}: a SentencePiece model without lstm_train's ids (0 pad, 1 unk, 2 bos, 3 eos)")

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int, model_type: Literal["unigram", "bpe"] = "unigram",
              lowercase: bool = False, character_coverage: float = 1.0, max_sentences: int = 0) -> SubwordVocab:
        """Train on `sentences` (raw text, one per item).  The size is a soft limit: a small
        corpus that cannot fill `vocab_size` pieces gets fewer instead of an error.

        One training thread and no sampling of the input, so every rank of a DDP run (and a
        resumed run) trains exactly the same model from the same sentences.
        """
        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=proto, vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc", hard_vocab_limit=False,
            input_sentence_size=max_sentences, shuffle_input_sentence=False, num_threads=1,
            max_sentence_length=1 << 16, minloglevel=2,
        )
        return cls(proto.getvalue())

    # -- storage -------------------------------------------------------------------

    def to_base64(self) -> str:
        return base64.b64encode(self.proto).decode("ascii")

    def __deepcopy__(self, memo: dict) -> SubwordVocab:
        return self  # immutable: a copied model (the bench's warm-up copy) shares its vocabulary

    @classmethod
    def from_base64(cls, text: str, source: str = "checkpoint") -> SubwordVocab:
        return cls(base64.b64decode(text), source)

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.proto)

    @classmethod
    def load(cls, path: Path) -> SubwordVocab:
        try:
            proto = Path(path).read_bytes()
        except OSError as e:
            raise VocabError(f"{path}: cannot read the vocabulary ({e.strerror})") from None
        return cls(proto, str(path))

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.proto).hexdigest()[:12]

    # -- use -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubwordVocab) and other.proto == self.proto

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Piece ids of each text (no BOS/EOS)."""
        return self.processor.encode(list(texts), out_type=int, num_threads=1)

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Plain text of each id list (PAD, BOS, EOS dropped): detokenised, as the model would write it."""
        return self.processor.decode([[i for i in row if i not in (PAD, BOS, EOS)] for row in ids])
