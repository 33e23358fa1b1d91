"""The `data:` and `model:` sections of a `sequence` job, importing no torch: `lstm-train config`
validates a job at once.  `lstm_train.tasks.sequence` trains with them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...schema import ModelBase, SequenceData

Files = str | list[str]


class SequenceDataSection(SequenceData):
    dataset: str | None = Field(None, description="a UCR/UEA archive dataset by name (JapaneseVowels, GunPoint, ...): "
                                "its _TRAIN.ts and _TEST.ts, from data.archive or the copy sktime ships")
    archive: str | None = Field(None, description="a folder of <Name>/<Name>_TRAIN.ts, _TEST.ts (data.dataset)")
    train: Files | None = Field(None, description="training sequences: CSV/TSV, Parquet, .npz, [x.npy, y.npy] or .ts")
    val: Files | None = Field(None, description="validation sequences (model selection); default: val_fraction")
    test: Files | None = Field(None, description="test sequences; default: test_fraction of train")
    format: Literal["auto", "csv", "tsv", "parquet", "npz", "npy", "ts"] = Field(
        "auto", description=(
            "file format of train/val/test; auto: from the file suffix"))
    label_column: str = Field("label", description="the class or value of each sequence (CSV, Parquet)")
    id_column: str | None = Field(None, description="long format: the column naming each row's sequence")
    time_column: str | None = Field(None, description="long format: steps ordered by it (default: file order)")
    feature_columns: list[str] | None = Field(None, description="default: every column but label, id and time")
    target: Literal["class", "value"] = Field("class", description="class: classification; value: regression")
    normalize: bool = Field(True, description="each feature (and a value target) scaled by the training split's "
                            "mean and standard deviation; the statistics travel with the model")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="of train, kept for validation when no val file")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="of train, kept for test when no test file")
    split_seed: int = Field(0, description="which sequences val_fraction and test_fraction hold out")
    batch_size: int = Field(32, ge=1, description="sequences per batch per process")

    @model_validator(mode="after")
    def _source(self) -> SequenceDataSection:
        if not self.model_fields_set:  # the schema's default section; a job says where its data is
            return self
        if (self.dataset is None) == (self.train is None):
            raise ValueError("give data.dataset (a UCR/UEA archive dataset) or data.train (your files), one of them")
        if self.dataset is not None and self.test is not None:
            raise ValueError("data.test: a data.dataset brings its own test split")
        if self.test is None and self.dataset is None and not self.test_fraction:
            raise ValueError("data.train without data.test needs data.test_fraction > 0 (a test split)")
        if self.val is not None and self.val_fraction:
            raise ValueError("data.val and data.val_fraction: give one of them")
        return self

    def validation(self) -> list[str] | str:
        """A validation file, or a seeded share of the training sequences."""
        return [] if self.val is not None or self.val_fraction else ["data.val_fraction=0.1"]

    def reported_metrics(self) -> dict[str, str]:
        if self.target == "class":
            return {"loss": "min", "accuracy": "max"}
        return {"loss": "min", "r2": "max", "rmse": "min", "mae": "min"}


class SequenceModelSection(ModelBase):
    pooling: Literal["last", "mean", "max"] = Field(
        "last", description="what the head reads: the state at each sequence's end, or the outputs pooled over time")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the linear head")


Data = SequenceDataSection
Model = SequenceModelSection
