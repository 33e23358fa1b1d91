"""The `data:` and `model:` sections of a `language_model` job, importing no torch: `lstm-train
config` validates a job at once.  `lstm_train.tasks.language_model` trains with them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...schema import ModelBase, StreamData, default_data_root


class LanguageModelData(StreamData):
    root: str = Field(default_factory=default_data_root, description="relative file names are read from here")
    files: str | list[str] = Field("tinyshakespeare/input.txt",
                                   description="the corpus: a file, a folder, a glob or a list of them")
    val_files: str | list[str] | None = Field(None, description="validation text (e.g. wiki.valid.tokens)")
    test_files: str | list[str] | None = Field(None, description="test text (e.g. wiki.test.tokens)")
    split: Literal["fraction", "files"] = Field(
        "fraction", description="without val_files: cut the stream by fraction (nanoGPT) or take the last files")
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description=(
            "share of the corpus (its end) held out for validation (split: fraction)"))
    test_fraction: float = Field(0.0, ge=0, lt=1, description="0: no test split (the result reports validation metrics only, and says so)")
    tokenizer: Literal["chars", "bytes", "words", "bpe"] = Field(
        "chars", description=(
            "chars or bytes: one token each; words: whitespace words; bpe: byte-level BPE of vocab_size"))
    vocab_size: int = Field(4000, ge=260, description="BPE vocabulary (tokenizer: bpe)")
    max_vocab: int | None = Field(None, ge=3, description="words: keep the most frequent (specials included); "
                                  "the rest read as <unk> (default: at most 500,000)")
    bpe_train_bytes: int = Field(1 << 30, ge=1 << 20, description="BPE: train on at most this much of the "
                                 "training text (its start), as sentencepiece's input_sentence_size")
    batch_size: int = Field(32, ge=1, description="streams per process (data.global_batch_size: over all)")

    def validation(self) -> list[str] | str:
        return []  # val_files, or a val_fraction > 0 of the corpus

    def reported_metrics(self) -> dict[str, str]:
        out = {"loss": "min", "bits_per_token": "min", "perplexity": "min"}
        if self.tokenizer in ("chars", "bytes"):
            out["bpc"] = "min"
        return out


class LanguageModelModel(ModelBase):
    hidden_size: int = Field(512, ge=1, description="LSTM hidden size per layer")
    num_layers: int = Field(2, ge=1, description="stacked LSTM layers")
    embedding_size: int = Field(
        128, ge=1, description=(
            "token embedding size (tie_weights needs it equal to the last layer's size)"))
    tie_weights: bool = Field(False, description="decoder = embedding (the last layer is embedding_size wide)")
    weight_drop: float = Field(0.0, ge=0, lt=1, description="DropConnect on hidden-to-hidden weights (AWD-LSTM)")
    locked_dropout: bool = Field(False, description="one dropout mask per sequence (variational, AWD-LSTM)")
    input_dropout: float | None = Field(None, ge=0, lt=1, description="dropout on the embeddings (default: dropout)")
    embed_dropout: float = Field(0.0, ge=0, lt=1, description="drop whole embedding rows (AWD-LSTM)")
    ar: float = Field(0.0, ge=0, description="activation regularisation (AWD-LSTM alpha)")
    tar: float = Field(0.0, ge=0, description="temporal activation regularisation (AWD-LSTM beta)")
    output: Literal["auto", "full", "adaptive"] = Field(
        "auto", description="the output layer: full softmax over the vocabulary, or adaptive softmax (Grave et al. "
        "2017: frequent words in a head, rare ones in smaller clusters); auto: adaptive for a words vocabulary whose "
        "full softmax would cost more than the LSTM stack (and tie_weights off), full otherwise")
    adaptive_cutoffs: list[int] | None = Field(
        None, description="output: adaptive: where the head's shortlist and each cluster end, in the vocabulary's "
        "frequency order (default: 2,000 then x5 while below half the vocabulary)")

    @model_validator(mode="after")
    def _output(self) -> LanguageModelModel:
        if self.output == "adaptive" and self.tie_weights:
            raise ValueError("model.tie_weights: true cannot go with model.output: adaptive (the adaptive softmax's "
                             "clusters project to smaller sizes and have no row per word to share with the embedding); "
                             "set model.tie_weights: false, or model.output: full (or auto, which keeps tying)")
        if self.adaptive_cutoffs is not None:
            if self.output != "adaptive":
                raise ValueError(f"model.adaptive_cutoffs is set but model.output is {self.output!r}: cutoffs are "
                                 "for model.output: adaptive")
            cuts = self.adaptive_cutoffs
            if not cuts or cuts[0] < 1 or any(b <= a for a, b in zip(cuts, cuts[1:])):
                raise ValueError(f"model.adaptive_cutoffs {cuts}: give increasing positive ids, e.g. [2000, 10000] "
                                 "(each below the vocabulary size)")
        return self


Data = LanguageModelData
Model = LanguageModelModel
