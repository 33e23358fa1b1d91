"""The `data:` and `model:` sections of a `classify` job, importing no torch: `lstm-train config`
validates a job at once.  `lstm_train.tasks.classify` trains with them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...schema import DataBase, ModelBase, default_data_root


class ClassifyData(DataBase):
    dataset: Literal["mnist", "fashion_mnist"] = "mnist"
    root: str = Field(default_factory=default_data_root)
    download: bool = False
    loader: Literal["tensor", "torchvision"] = Field(
        "tensor", description="tensor: whole set on the device (fast); torchvision: Dataset + DataLoader"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader workers (loader=torchvision)")
    sequence: Literal["rows", "pixels"] = Field(
        "rows", description="rows: 28 steps of 28 pixels (the tutorial); pixels: 784 steps of 1 pixel (sequential MNIST)"
    )


class ClassifyModel(ModelBase):
    pass


Data = ClassifyData
Model = ClassifyModel
