"""The `data:` and `model:` sections of a `forecast` job, importing no torch: `lstm-train config`
validates a job at once.  `lstm_train.tasks.forecast` trains with them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ...schema import DataBase, ModelBase, Section


class SineConfig(Section):
    series: int = Field(100, ge=1, description="number of waves")
    length: int = Field(1000, ge=2, description="points per wave")
    period: float = Field(20.0, gt=0, description="T in sin((i + phase) / T): wavelength 2*pi*T points")
    noise: float = Field(0.0, ge=0, description="std of added Gaussian noise")
    seed: int = Field(2, description="seed of the waves' phases and noise")


class ForecastData(DataBase):
    source: Literal["sine", "airline", "co2", "sunspots", "csv"] = Field(
        "sine", description=(
            "sine: generated waves; airline, co2, sunspots: the classic series; csv: your own file"))
    path: str | None = Field(None, validate_default=True, description="CSV file (source csv)")
    column: str | None = Field(None, description="CSV column to forecast (default: the only non-time column)")
    time_column: str | None = Field(None, description="CSV column of dates (gaps detected, labels printed)")
    covariates: list[str] = Field([], description="extra CSV columns fed to the encoder alongside the target")
    fill: Literal["error", "interpolate", "ffill"] = Field(
        "error", description="missing values / time gaps: refuse, fill linearly, or repeat the last value"
    )
    season_length: int | None = Field(
        None,
        ge=1,
        description="default: 12 airline/co2, 11 sunspots, round(2*pi*period) sine; csv: from the time "
        "column's frequency (12 monthly, 4 quarterly, 52 weekly, 7 daily, 24 hourly), else 1",
    )
    window: int = Field(24, ge=1, description="past values fed to the encoder")
    stride: int = Field(1, ge=1, description="step between training windows")
    val_size: int | float = Field(
        0,
        ge=0,
        description="points before the test span (or a fraction < 1), kept out of training: the val windows "
        "(targets in this span) pick the best checkpoint by MASE and drive early stopping",
    )
    test_size: int | float = Field(0.2, gt=0, description="points at the end (or a fraction < 1)")
    transform: Literal["none", "log"] = Field(
        "none", description=(
            "log: the model sees log(values) (for multiplicative growth); none: as they are"))
    scale: Literal["standard", "minmax", "none"] = Field(
        "standard", description=(
            "standard: mean 0, std 1 of the training part; minmax: to [0, 1]; none"))
    classical: Literal["auto", "sarima", "ets", "ar", "none"] = Field(
        "auto", description="auto: sarima for one seasonal series (season <= 52), else ar"
    )
    ar_order: int | None = Field(None, ge=1, description="for classical ar (default: the window)")
    plot_series: int = Field(3, ge=1, description="series drawn in forecast.png (sine has many)")
    sine: SineConfig = SineConfig()

    def validation(self) -> list[str] | str:
        """A span before the test span (time order kept: windows drawn at random would leak the future)."""
        return [] if self.val_size else ["data.val_size=0.1"]

    def reported_metrics(self) -> dict[str, str]:
        return {"loss": "min", "mse": "min", "mae": "min", "rmse": "min", "mase": "min", "smape": "min"}

    @field_validator("path", "column", "time_column", "covariates")
    @classmethod
    def _csv_only(cls, value: Any, info: ValidationInfo) -> Any:
        source = info.data.get("source")
        if source == "csv" and info.field_name == "path" and not value:
            raise ValueError("data.source = 'csv' needs data.path (the CSV file)")
        if source not in ("csv", None) and value:
            raise ValueError(f"only used with data.source = 'csv' (source is {source!r})")
        return value


class ForecastModel(ModelBase):
    horizon: int = Field(12, ge=1, description="values predicted at once (direct multi-step)")
    residual: Literal["none", "last", "seasonal"] = Field(
        "none", description="predict a correction to the naive (last) or seasonal naive forecast"
    )
    relative_inputs: bool = Field(False, description="feed the window relative to its last value (needs a residual)")

    @field_validator("relative_inputs")
    @classmethod
    def _relative(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("residual") == "none":
            raise ValueError("needs model.residual = 'last' or 'seasonal' to restore the level")
        return value


Data = ForecastData
Model = ForecastModel
