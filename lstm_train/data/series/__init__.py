"""Time series for forecasting: what a series is, and where each step lives.

* `sources`: the built-in series (airline, co2, sunspots) and the synthetic sines;
* `csvfile`: a series from your own CSV file, every problem reported with its line;
* `windows`: time splits, transform and scaling fitted on the train span, windows.

A source gives one or more `Series` (one for a CSV or a real data set, a hundred
for the synthetic sines), in original units; `windows` turns them into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...schema import ConfigError


class SeriesError(ConfigError):
    """A series that cannot be used as given: missing file or column, bad value, gap, too short."""


@dataclass
class Series:
    """One univariate target series with optional covariates, in original units."""

    values: np.ndarray  # float64 [T]
    name: str = "series"
    covariates: np.ndarray | None = None  # float64 [T, C]
    covariate_names: list[str] = field(default_factory=list)
    times: Any = None  # pandas DatetimeIndex, or None
    freq: str | None = None  # pandas offset alias when times are regular datetimes

    def __len__(self) -> int:
        return len(self.values)

    def features(self) -> np.ndarray:
        """[T, 1 + C]: the target first, then covariates."""
        if self.covariates is None:
            return self.values[:, None]
        return np.concatenate([self.values[:, None], self.covariates], axis=1)
