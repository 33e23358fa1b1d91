"""The `data:` and `model:` sections of a `classify` job, importing no torch: `lstm-train config`
validates a job at once.  `lstm_train.tasks.classify` trains with them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...schema import DataBase, ModelBase, default_data_root


class ClassifyData(DataBase):
    dataset: Literal["mnist", "fashion_mnist"] = Field(
        "mnist", description=(
            "MNIST or Fashion-MNIST, read from torchvision's layout under root"))
    root: str = Field(
        default_factory=default_data_root, description=(
            "data root holding the dataset's folder (default: $LSTM_TRAIN_DATA, else ./data)"))
    download: bool = Field(False, description="fetch the dataset into root when missing (needs internet)")
    loader: Literal["tensor", "torchvision"] = Field(
        "tensor", description="tensor: whole set on the device (fast); torchvision: Dataset + DataLoader"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader workers (loader=torchvision)")
    sequence: Literal["rows", "pixels"] = Field(
        "rows", description="rows: 28 steps of 28 pixels (the tutorial); pixels: 784 steps of 1 pixel (sequential MNIST)"
    )
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of the training images held out for validation (model selection, early "
        "stopping; a sweep sets 0.1 when it is 0); 0: none, the test split is evaluated as training goes (the tutorial)")
    split_seed: int = Field(0, description="which training images val_fraction holds out")

    @model_validator(mode="after")
    def _holdout(self) -> ClassifyData:
        if self.val_fraction and self.loader == "torchvision":
            raise ValueError("data.val_fraction holds out part of the training tensors: use data.loader = 'tensor'")
        return self

    def reported_metrics(self) -> dict[str, str]:
        return {"loss": "min", "accuracy": "max"}


class ClassifyModel(ModelBase):
    pass


Data = ClassifyData
Model = ClassifyModel
