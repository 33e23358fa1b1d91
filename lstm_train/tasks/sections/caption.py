"""The `data:` and `model:` sections of a `caption` job, importing no torch: `lstm-train config`
validates a job at once.  `lstm_train.tasks.caption` trains with them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...data.strip_layout import DIGIT, VOCAB_SIZE, default_width, min_width
from ...schema import DataBase, ModelBase, default_data_root


class CaptionData(DataBase):
    dataset: Literal["mnist"] = Field("mnist", description="where the digits come from (MNIST's IDX files under root)")
    root: str = Field(
        default_factory=default_data_root, description=(
            "data root holding the dataset's folder (default: $LSTM_TRAIN_DATA, else ./data)"))
    download: bool = Field(False, description="fetch the dataset into root when missing (needs internet)")
    batch_size: int = Field(128, ge=1, description="strips per batch per process")
    eval_batch_size: int = Field(1000, ge=1, description="strips per batch when evaluating")
    max_digits: int = Field(5, ge=1, le=20, description="longest strip, in digits")
    min_digits: int = Field(1, ge=1, description="shortest strip, in digits")
    num_train: int = Field(50000, ge=1, description="training strips (from MNIST train digits)")
    num_test: int = Field(10000, ge=1, description="test strips (from MNIST test digits)")
    height: int = Field(32, ge=DIGIT, description="strip height in pixels (28 + room for vertical jitter)")
    width: int | None = Field(None, ge=DIGIT, description="strip width; default: room for max_digits at max_gap")
    min_gap: int = Field(-4, gt=-DIGIT, description="narrowest gap between digit boxes (negative: overlap)")
    max_gap: int = Field(4, description="widest gap between digit boxes")
    seed: int = Field(0, description="strip generation seed (test strips use seed + 1)")
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of the training strips held out for validation (model selection, early "
        "stopping; a sweep sets 0.1 when it is 0); 0: none")

    @model_validator(mode="after")
    def _consistent(self) -> CaptionData:
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits {self.min_digits} > max_digits {self.max_digits}")
        if self.min_gap > self.max_gap:
            raise ValueError(f"min_gap {self.min_gap} > max_gap {self.max_gap}")
        need = min_width(self.max_digits, self.max_gap)
        if self.width is not None and self.width < need:
            raise ValueError(
                f"width {self.width} cannot hold {self.max_digits} digits with gaps up to {self.max_gap}: "
                f"needs at least {need} (or leave width unset)"
            )
        return self

    def reported_metrics(self) -> dict[str, str]:
        return {"loss": "min", "sequence_accuracy": "max", "cer": "min"}

    @property
    def strip_width(self) -> int:
        return self.width or default_width(self.max_digits, self.max_gap)


class CaptionModel(ModelBase):
    hidden_size: int = Field(128, ge=1, description="decoder LSTM size")
    num_layers: int = Field(1, ge=1, description="decoder LSTM layers")
    bidirectional: bool = Field(True, description="the encoder LSTM over columns reads both ways")
    encoder: Literal["cnn", "lstm"] = Field(
        "cnn", description="cnn: small CNN -> column features; lstm: an LSTM over raw pixel columns"
    )
    channels: list[int] = Field([16, 32, 64], min_length=1, description="CNN channels per block")
    width_pools: int = Field(2, ge=0, description="CNN blocks that also halve the width (columns = width / 2**n)")
    downsample: Literal["pool", "stride"] = Field(
        "pool", description="how CNN blocks shrink the image: 2x2 max-pooling, or strided convolutions (cheaper)"
    )
    batch_norm: bool = Field(True, description="BatchNorm after each convolution (converges ~2x faster)")
    encoder_lstm_layers: int = Field(1, ge=0, description="LSTM layers over the columns (0: none with encoder=cnn)")
    encoder_hidden: int | None = Field(None, ge=1, description="encoder LSTM size per direction (default: hidden_size)")
    embed_size: int = Field(32, ge=1, description="size of the decoder's digit embedding")
    attention: bool = Field(True, description="additive attention over encoder columns; false: one fixed summary")
    attention_size: int | None = Field(
        None, ge=1, description=(
            "size of the additive attention's hidden layer (default: hidden_size)"))
    beam_size: int = Field(1, ge=1, le=VOCAB_SIZE, description="1: greedy decoding; >1: beam search")
    max_len: int | None = Field(None, ge=1, description="decoding guard in tokens (default: max_digits + 1)")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description=(
            "share of each target's probability spread over the other tokens in the loss"))

    @model_validator(mode="after")
    def _encoder(self) -> CaptionModel:
        if self.encoder == "lstm" and self.encoder_lstm_layers < 1:
            raise ValueError("encoder 'lstm' needs encoder_lstm_layers >= 1")
        return self


Data = CaptionData
Model = CaptionModel
