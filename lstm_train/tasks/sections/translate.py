"""The `data:` and `model:` sections of a `translate` job, importing no torch: `lstm-train config`
validates a job at once.  `lstm_train.tasks.translate` trains with them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...schema import ModelBase, Section, SequenceData, default_data_root


class ParallelFiles(Section):
    """One split of a user's parallel data: two line-aligned text files, or one TSV."""

    source: str | None = Field(None, description="line-aligned source sentences, one per line")
    target: str | None = Field(None, description="line-aligned target sentences (line i translates source line i)")
    tsv: str | None = Field(None, description="tab-separated file with a source and a target column")
    source_column: int | str = Field(0, description="TSV source column: 0-based index, or a name with header: true")
    target_column: int | str = Field(1, description="TSV target column")
    header: bool = Field(False, description="the TSV's first line names its columns")

    @model_validator(mode="after")
    def _one_form(self) -> ParallelFiles:
        texts = self.source is not None or self.target is not None
        if texts == (self.tsv is not None):
            raise ValueError("give either source + target (two line-aligned files) or tsv (one file), not both")
        if texts and (self.source is None or self.target is None):
            raise ValueError("line-aligned files need both source and target")
        return self


class SubwordConfig(Section):
    model: Literal["unigram", "bpe"] = Field("unigram", description="SentencePiece model type")
    vocab_size: int = Field(8000, ge=16, description="pieces per vocabulary (a soft limit on tiny corpora)")
    joint: bool = Field(True, description="one vocabulary for both languages (needed by model.share_embeddings)")
    character_coverage: float = Field(
        1.0, gt=0.0, le=1.0, description=(
            "SentencePiece's share of characters covered by the vocabulary (the rest: unknown)"))


class TranslateData(SequenceData):
    dataset: Literal["multi30k", "tatoeba", "files"] = Field(
        "multi30k", description=(
            "multi30k or tatoeba under root, or files: your own parallel text"))
    root: str = Field(
        default_factory=default_data_root, description=(
            "data root holding the dataset's folder (default: $LSTM_TRAIN_DATA, else ./data)"))
    source_lang: str = Field("de", description="multi30k: de/en; tatoeba: en/fr")
    target_lang: str = Field("en", description="the language translated into (the other side is the source)")
    test_set: str = Field("test_2016_flickr", description="multi30k test files: test_2016_flickr, "
                          "test_2017_flickr, test_2017_mscoco, test_2018_flickr")
    train: ParallelFiles | None = Field(None, description="dataset files: the training pairs")
    val: ParallelFiles | None = Field(None, description="dataset files: validation pairs (default: split off train)")
    test: ParallelFiles | None = Field(None, description="dataset files: test pairs (default: split off train)")
    val_fraction: float = Field(0.02, ge=0.0, lt=1.0, description="of distinct sentences, when split off")
    test_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="of distinct sentences, when split off")
    split_seed: int = Field(0, description="which sentence pairs val_fraction and test_fraction hold out")
    lowercase: Literal["none", "source", "both"] = Field(
        "none", description="lower-case the source (the model's input) or both sides (outputs are then lower-case)"
    )
    subword: SubwordConfig = SubwordConfig()
    max_length: int = Field(100, ge=2, description="subword tokens per sentence (the target's with <bos>/<eos>)")
    too_long: Literal["truncate", "skip", "error"] = Field(
        "truncate", description="training pairs over max_length: truncate or skip them (counted), or stop; "
        "validation and test sentences are never skipped (sources truncated, counted)"
    )
    batch_size: int = Field(64, ge=1, description="sentence pairs per batch per process")
    eval_batch_size: int = Field(200, ge=1, description="sentence pairs per batch when evaluating")

    def validation(self) -> list[str] | str:
        """Multi30k has its val files; otherwise validation pairs are given or split off train."""
        if self.dataset == "multi30k" or self.val is not None or self.val_fraction:
            return []
        return ["data.val_fraction=0.02"]

    def reported_metrics(self) -> dict[str, str]:
        return {"loss": "min", "perplexity": "min", "bleu": "max", "bleu_lc": "max", "chrf": "max",
                "exact_match": "max"}

    @model_validator(mode="after")
    def _files(self) -> TranslateData:
        if self.dataset == "files" and self.train is None:
            raise ValueError("dataset 'files' needs data.train (source + target files, or tsv)")
        if self.dataset != "files" and (self.train or self.val or self.test):
            raise ValueError(f"data.train/val/test are for dataset 'files', not {self.dataset!r}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction leave nothing to train on")
        return self


class TranslateModel(ModelBase):
    embed_size: int = Field(256, ge=1, description="source and target token embedding size")
    hidden_size: int = Field(256, ge=1, description="encoder LSTM size per direction")
    num_layers: int = Field(2, ge=1, description="encoder LSTM layers")
    bidirectional: bool = Field(True, description="encoder reads the source both ways")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="dropout between layers and on the attentional state")
    decoder_hidden: int = Field(512, ge=1, description="decoder LSTM size")
    decoder_layers: int = Field(1, ge=1, description="stacked decoder LSTM layers")
    attention: Literal["luong", "bahdanau"] = Field(
        "luong", description=(
            "luong: multiplicative (general) scores; bahdanau: additive"))
    input_feeding: bool = Field(True, description="feed the previous attentional state to the decoder (Luong)")
    tie_embeddings: bool = Field(True, description="output layer shares the target embedding matrix")
    share_embeddings: bool = Field(False, description="source and target share one embedding (joint vocabulary)")
    label_smoothing: float = Field(
        0.1, ge=0.0, lt=1.0, description=(
            "share of each target's probability spread over the other tokens in the loss"))
    beam_size: int = Field(1, ge=1, le=64, description="decoding for evaluation and predict: 1 greedy, >1 beam")
    length_penalty: float = Field(1.0, ge=0.0, description="beam scores are log-prob / length ** this")
    max_decode_ratio: float = Field(2.0, gt=0.0, description="decode at most ratio x source length + extra tokens")
    max_decode_extra: int = Field(
        10, ge=1, description=(
            "decode at most max_decode_ratio x source length + this many tokens"))


Data = TranslateData
Model = TranslateModel
