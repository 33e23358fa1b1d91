"""The `data:` and `model:` sections of a `tag` job, importing no torch: `lstm-train config`
validates a job at once.  `lstm_train.tasks.tag` trains with them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ...schema import ModelBase, SequenceData, default_data_root

EWT = "UD_English-EWT/en_ewt-ud-"


class TagData(SequenceData):
    root: str = Field(default_factory=default_data_root, description="relative paths are read from here")
    train: str = Field(EWT + "train.conllu", description="training file (CoNLL-U or whitespace columns)")
    val: str | None = Field(EWT + "dev.conllu", description="validation file (model selection); null: none")
    test: str = Field(EWT + "test.conllu", description="test file, evaluated once at the end")
    format: Literal["auto", "conllu", "columns"] = Field(
        "auto", description="auto: CoNLL-U for *.conllu files, else whitespace columns"
    )
    column: str | int | None = Field(
        None, description="tag column: a CoNLL-U field (upos, xpos, deprel, feats...; default upos) or a column "
                          "number of a whitespace-column file (default -1, the last)"
    )
    scheme: Literal["auto", "bio", "none"] = Field(
        "auto", description="bio: entity precision/recall/F1 too (primary metric: entity F1); auto: bio when "
                            "every training tag is O or B-/I-/E-/S-TYPE"
    )
    lowercase: bool = Field(True, description="lower-case words for the word vocabulary (characters keep case)")
    min_freq: int = Field(1, ge=1, description="words seen fewer times in training read as <unk>")
    max_chars: int = Field(24, ge=3, description="characters per word row incl. <bos>/<eos>; longer words keep "
                                                 "their first and last characters")
    batch_size: int = Field(32, ge=1, description="sentences per batch per process")
    eval_batch_size: int = Field(256, ge=1, description="sentences per batch when evaluating")

    def validation(self) -> list[str] | str:
        return [] if self.val else "data.val is null: name a validation file (CoNLL-U or columns) as data.val"

    def reported_metrics(self) -> dict[str, str]:
        """Entity scores on BIO data (scheme bio, or auto when the training tags turn out to be BIO)."""
        out = {"loss": "min", "accuracy": "max", "accuracy_seen": "max", "accuracy_unseen": "max"}
        if self.scheme != "none":
            out.update(entity_precision="max", entity_recall="max", entity_f1="max")
        return out

    def path(self, name: str) -> Path:
        path = Path(getattr(self, name))
        return path if path.is_absolute() else Path(self.root) / path


class TagModel(ModelBase):
    hidden_size: int = Field(200, ge=1, description="sentence BiLSTM size per direction")
    num_layers: int = Field(2, ge=1, description="stacked word-level LSTM layers")
    bidirectional: bool = Field(
        True, description=(
            "read each sentence both ways (a tag depends on the words after it too)"))
    dropout: float = Field(0.33, ge=0.0, lt=1.0, description="on the BiLSTM's inputs, between layers and on its output")
    word_dim: int = Field(100, ge=1, description="word embedding size")
    char_encoder: Literal["cnn", "lstm", "none"] = Field(
        "cnn", description=(
            "characters of each word encoded by a CNN or an LSTM (unknown words get a vector); none"))
    char_dim: int = Field(50, ge=1, description="character embedding size")
    char_size: int = Field(100, ge=1, description="char CNN filters, or char BiLSTM size per direction")
    char_kernel: int = Field(3, ge=1, description="char CNN window (odd)")
    word_dropout: float = Field(
        0.25, ge=0.0, description="alpha: a training word reads as <unk> with probability alpha / (alpha + its "
                                  "count), so rare words teach the <unk> path (0: off)"
    )
    crf: bool = Field(False, description="a linear-chain CRF over the tag scores (Viterbi decoding)")

    @model_validator(mode="after")
    def _kernel(self) -> TagModel:
        if self.char_kernel % 2 == 0:
            raise ValueError(f"char_kernel must be odd (centred windows), got {self.char_kernel}")
        return self


Data = TagData
Model = TagModel
