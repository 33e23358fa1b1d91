"""The `data:` and `model:` sections of a `text_classify` job, importing no torch: `lstm-train config`
validates a job at once.  `lstm_train.tasks.text_classify` trains with them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...schema import ModelBase, Section, SequenceData, default_data_root


class TextData(SequenceData):
    source: Literal["sst2", "sst5", "files"] = Field(
        "sst2", description=(
            "sst2 or sst5: the Stanford Sentiment Treebank under root; files: your own path(s)"))
    root: str = Field(default_factory=default_data_root, description="sst: the trees are in <root>/SST/trees")
    phrases: bool = Field(True, description="sst: train on every labelled phrase (deduplicated); false: sentences only")
    train_labels: Literal["binary", "fine"] = Field(
        "binary", description="sst2: fine trains on the five-way labels (neutral phrases included) and answers "
        "positive / negative by P(3)+P(4) vs P(0)+P(1)"
    )
    path: str | None = Field(None, description="files: one file, split by val_fraction / test_fraction")
    train_path: str | None = Field(None, description="files: the train file (with test_path, optional val_path)")
    val_path: str | None = Field(
        None, description=(
            "validation file (source: files); default: val_fraction of the training file"))
    test_path: str | None = Field(None, description="test file (source: files)")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "hf"] = Field(
        "auto", description="auto: from the file name's suffix (a datasets save_to_disk folder: hf)")
    text_column: str = Field("text", description="files: column (JSON key) holding the text")
    label_column: str = Field("label", description="files: column (JSON key) holding the label")
    encoding: str = Field("utf-8", description="text encoding of your files (source: files)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="data.path: share of rows for validation")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="data.path: share of rows for test")
    split_seed: int = Field(0, description="which rows val_fraction holds out")
    tokenizer: Literal["words", "whitespace"] = Field(
        "words", description="files and predict: words (punctuation and clitics apart) or whitespace"
    )
    lowercase: bool = Field(True, description="lowercase the text before the vocabulary is built")
    min_freq: int = Field(1, ge=1, description="words seen fewer times in train read as <unk>")
    max_vocab: int | None = Field(None, ge=5, description="keep the most frequent words (specials included)")
    max_length: int | None = Field(256, ge=1, description="cut texts after this many words (counted in the log)")

    def validation(self) -> list[str] | str:
        if self.source != "files" or self.val_path or (self.path and self.val_fraction):
            return []  # SST's dev trees, a validation file, or a share of data.path
        if self.path:
            return ["data.val_fraction=0.1"]
        return ("data.train_path is given without data.val_path: name a validation file (data.val_path), "
                "or give one file as data.path, which is split by data.val_fraction")

    def reported_metrics(self) -> dict[str, str]:
        return {"loss": "min", "accuracy": "max", "macro_f1": "max"}

    @model_validator(mode="after")
    def _paths(self) -> TextData:
        given = {k: getattr(self, k) for k in ("path", "train_path", "val_path", "test_path") if getattr(self, k)}
        if self.train_labels == "fine" and self.source != "sst2":
            raise ValueError("data.train_labels = 'fine' is for data.source = 'sst2' (sst5 is fine-grained already)")
        if self.source != "files":
            if given:
                raise ValueError(f"{', '.join('data.' + k for k in given)}: only for data.source = 'files'")
            return self
        if self.path and len(given) > 1:
            raise ValueError("data.path (one file, split by fraction) or data.train_path/val_path/test_path, not both")
        if not self.path and not (self.train_path and self.test_path):
            raise ValueError("data.source = 'files' needs data.path, or data.train_path and data.test_path")
        return self


class EmbeddingsConfig(Section):
    path: str | None = Field(None, description="GloVe / word2vec text file; its dimension must be model.embedding_dim")
    freeze: bool = Field(False, description="keep the whole embedding table fixed (else fine-tuned)")


class TextModel(ModelBase):
    hidden_size: int = Field(150, ge=1, description="LSTM units per direction")
    bidirectional: bool = Field(True, description="read each text both ways")
    embedding_dim: int = Field(
        300, ge=1, description=(
            "word embedding size (equal to the pretrained vectors' size when embeddings are given)"))
    pooling: Literal["last", "max", "mean"] = Field(
        "max", description=(
            "the text's vector: the last state, or the max or mean over all states"))
    embedding_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the word embeddings")
    word_dropout: float = Field(0.0, ge=0, lt=1, description="share of training words replaced by <unk>")
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    sparse_embeddings: bool = Field(
        False, description="sparse gradients for the embedding table, updated by SparseAdam (only the batch's rows); "
        "CPU and gloo only: NCCL cannot all-reduce sparse gradients"
    )

Data = TextData
Model = TextModel
