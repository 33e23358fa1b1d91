"""Time series for forecasting: sources, checks, time splits, scaling and windows.

A source gives one or more `Series` (one for a CSV or a real data set, a hundred
for the synthetic sines).  Every series is cut by time into train / val / test
spans at the same positions from its end:

    |<------------- train ------------->|<--- val --->|<--- test --->|
    0                              n_train     n_train+n_val         T

A *window* is `window` past values (the encoder input) followed by `horizon`
future values (the targets), identified by its *origin* t, the index of its
first target: inputs z[t-window:t], targets z[t:t+horizon].

* training windows lie wholly inside the train span (inputs and targets);
* val / test windows are the rolling origins whose *targets* lie wholly inside
  the val / test span; their inputs look back into earlier spans, which is the
  past a forecaster is entitled to see at that origin.

So no val or test value ever appears in a training window.  Scaling (and every
other fitted statistic: MASE scale, classical models' parameters) is fitted on
the train span only.  Windows are made once, as tensors, so the loop cuts
batches by index like it does for MNIST.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..schema import ConfigError


class SeriesError(ConfigError):
    """A series that cannot be used as given: missing file or column, bad value, gap, too short."""


@dataclass
class Series:
    """One univariate target series with optional covariates, in original units."""

    values: np.ndarray  # float64 [T]
    name: str = "series"
    covariates: np.ndarray | None = None  # float64 [T, C]
    covariate_names: list[str] = field(default_factory=list)
    times: Any = None  # pandas DatetimeIndex / Index of labels, or None
    freq: str | None = None  # pandas offset alias when times are regular datetimes

    def __len__(self) -> int:
        return len(self.values)

    def features(self) -> np.ndarray:
        """[T, 1 + C]: the target first, then covariates."""
        if self.covariates is None:
            return self.values[:, None]
        return np.concatenate([self.values[:, None], self.covariates], axis=1)


# ---------------------------------------------------------------------------
# Sources


# Default season length per built-in source (MASE scale, seasonal naive, SARIMA).
SEASON_LENGTH = {"airline": 12, "co2": 12, "sunspots": 11}


def season_from_freq(freq: str | None) -> int:
    """The usual season of a calendar frequency: 12 monthly, 4 quarterly, 52 weekly,
    7 daily (5 business days), 24 hourly; 1 (none) for yearly or unknown."""
    if not freq:
        return 1
    base = freq.split("-")[0].lstrip("0123456789")
    for prefix, m in (("MS", 12), ("ME", 12), ("M", 12), ("Q", 4), ("W", 52), ("B", 5), ("D", 7), ("h", 24), ("H", 24)):
        if base.startswith(prefix):
            return m
    return 1


def sine_series(n: int = 100, length: int = 1000, period: float = 20.0, noise: float = 0.0, seed: int = 2) -> list[Series]:
    """pytorch/examples time_sequence_prediction: sin((i + phase) / T), phase ~ U{-4T..4T}.

    The wavelength is 2*pi*T steps (T = `period`, 20 in the example).
    """
    rng = np.random.RandomState(seed)
    shift = rng.randint(-4 * int(period), 4 * int(period), n).reshape(n, 1)
    x = np.arange(length)[None, :] + shift
    data = np.sin(x / float(period))
    if noise > 0:
        data = data + noise * rng.standard_normal(data.shape)
    return [Series(row.astype(np.float64), name=f"sine{i}") for i, row in enumerate(data)]


def sine_season_length(period: float) -> int:
    return max(1, round(2 * math.pi * period))


def airline() -> Series:
    """Monthly international airline passengers (thousands), Jan 1949 - Dec 1960; ships with pmdarima."""
    import pandas as pd
    from pmdarima.datasets import load_airpassengers

    values = np.asarray(load_airpassengers(), dtype=np.float64)
    times = pd.date_range("1949-01-01", periods=len(values), freq="MS")
    return Series(values, name="airline passengers", times=times, freq="MS")


def co2() -> Series:
    """Mauna Loa CO2 (ppm), weekly 1958-2001 averaged to months; ships with statsmodels.

    The weekly record has gaps; the monthly mean of the weeks present is used and
    the few months with no week at all are interpolated linearly.
    """
    import statsmodels.api as sm

    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate("linear")
    return Series(monthly.to_numpy(np.float64), name="Mauna Loa CO2", times=monthly.index, freq="MS")


def sunspots() -> Series:
    """Yearly mean sunspot numbers 1700-2008; ships with statsmodels."""
    import pandas as pd
    import statsmodels.api as sm

    frame = sm.datasets.sunspots.load_pandas().data
    times = pd.to_datetime(frame["YEAR"].astype(int).astype(str), format="%Y")
    return Series(
        frame["SUNACTIVITY"].to_numpy(np.float64), name="sunspots", times=pd.DatetimeIndex(times), freq="YS-JAN"
    )


# ---------------------------------------------------------------------------
# CSV files


MISSING = {"", "na", "nan", "null", "none", "n/a", "-", "?"}


def _numbers(raw: list[str], path: Path, column: str) -> np.ndarray:
    """Strings -> float64, NaN for missing markers; a non-number names its line."""
    out = np.empty(len(raw), dtype=np.float64)
    for i, text in enumerate(raw):
        text = text.strip()
        if text.lower() in MISSING:
            out[i] = np.nan
            continue
        try:
            if "_" in text:  # Python reads "1_000" as 1000; a CSV does not
                raise ValueError(text)
            out[i] = float(text)
        except ValueError:
            raise SeriesError(
                f"{path}: line {i + 2} (data row {i + 1}): column {column!r} has {text!r}, which is not a number"
            ) from None
        if not math.isfinite(out[i]):
            raise SeriesError(f"{path}: line {i + 2} (data row {i + 1}): column {column!r} has {text!r}, not finite")
    return out


def _fill(values: np.ndarray, how: str, what: str, labels: list[str]) -> np.ndarray:
    """Fill NaNs by `how` (interpolate / ffill) or raise naming the first few."""
    missing = np.flatnonzero(np.isnan(values))
    if len(missing) == 0:
        return values
    if how == "error":
        shown = ", ".join(labels[i] for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise SeriesError(
            f"{what}: {len(missing)} missing value(s) at {shown}. Fix the file, or set data.fill "
            f"to 'interpolate' (linear between neighbours) or 'ffill' (repeat the last value)."
        )
    present = np.flatnonzero(~np.isnan(values))
    if len(present) == 0:
        raise SeriesError(f"{what}: every value is missing")
    out = values.copy()
    if how == "interpolate":
        out[missing] = np.interp(missing, present, values[present])
    else:  # ffill; leading gaps take the first value
        idx = np.where(np.isnan(values), 0, np.arange(len(values)))
        np.maximum.accumulate(idx, out=idx)
        out = values[idx]
        out[np.isnan(out)] = values[present[0]]
    return out


def read_csv(
    path: str | Path,
    column: str | None = None,
    time_column: str | None = None,
    covariates: list[str] = (),
    fill: str = "error",
) -> Series:
    """A series from a CSV file, every problem reported with the file, column and line.

    * `column`: the target; if omitted the file must have exactly one column
      besides `time_column`.
    * `time_column`: parsed as dates; must be increasing.  With a regular
      frequency (inferred), missing timestamps are gaps like empty cells.
    * `fill`: 'error' (default) refuses gaps and missing values; 'interpolate'
      fills them linearly, 'ffill' repeats the last value.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise SeriesError(f"data.path = {str(path)!r}: file not found")
    if path.is_dir():
        raise SeriesError(f"data.path = {str(path)!r} is a folder, not a CSV file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise SeriesError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SeriesError(f"{path}: not a readable CSV file ({e})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    columns = list(frame.columns)

    def need(name: str, key: str) -> None:
        if name not in columns:
            raise SeriesError(f"{path}: {key} = {name!r} is not a column; the columns are: {', '.join(map(repr, columns))}")

    if time_column is not None:
        need(time_column, "data.time_column")
    if column is None:
        others = [c for c in columns if c != time_column and c not in covariates]
        if len(others) != 1:
            raise SeriesError(
                f"{path}: set data.column to the column to forecast; the columns are: {', '.join(map(repr, columns))}"
            )
        column = others[0]
    need(column, "data.column")
    for name in covariates:
        need(name, "data.covariates")
    if len(frame) == 0:
        raise SeriesError(f"{path}: no data rows under the header")

    values = _numbers(frame[column].tolist(), path, column)
    covs = [_numbers(frame[c].tolist(), path, c) for c in covariates]
    labels = [f"line {i + 2}" for i in range(len(frame))]
    times, freq = None, None

    if time_column is not None:
        raw = frame[time_column].str.strip()
        times = pd.to_datetime(raw, errors="coerce", format="mixed")
        bad = np.flatnonzero(times.isna().to_numpy())
        if len(bad):
            i = bad[0]
            raise SeriesError(
                f"{path}: line {i + 2} (data row {i + 1}): time column {time_column!r} has {raw.iloc[i]!r}, "
                f"which is not a date/time"
            )
        times = pd.DatetimeIndex(times)
        steps = np.diff(times.asi8)
        if len(steps) and (steps <= 0).any():
            i = int(np.flatnonzero(steps <= 0)[0]) + 1
            word = "repeats" if steps[i - 1] == 0 else "goes back from"
            raise SeriesError(
                f"{path}: line {i + 2}: time column {time_column!r} {word} the line before "
                f"({raw.iloc[i - 1]!r} -> {raw.iloc[i]!r}); rows must be in increasing time order"
            )
        freq = _infer_freq(times)
        if freq is not None:
            full = pd.date_range(times[0], times[-1], freq=freq)
            if len(full) != len(times):
                gaps = list(full[~full.isin(times)])
                if fill == "error":
                    shown = ", ".join(_label(t) for t in gaps[:5])
                    raise SeriesError(
                        f"{path}: time column {time_column!r} has {len(gaps)} gap(s) in its {freq} steps "
                        f"(missing: {shown}{' ...' if len(gaps) > 5 else ''}). Fix the file, or set data.fill "
                        f"to 'interpolate' or 'ffill' to fill them."
                    )
                where = full.get_indexer(times)
                def regrid(a: np.ndarray) -> np.ndarray:
                    out = np.full(len(full), np.nan)
                    out[where] = a
                    return out
                values, covs = regrid(values), [regrid(c) for c in covs]
                row_of = dict(zip(where.tolist(), range(len(where))))
                labels = [
                    f"line {row_of[j] + 2} ({_label(t)})" if j in row_of else f"{_label(t)} (no row)"
                    for j, t in enumerate(full)
                ]
                times = full
            else:
                labels = [f"line {i + 2} ({_label(t)})" for i, t in enumerate(times)]
        else:
            labels = [f"line {i + 2} ({_label(t)})" for i, t in enumerate(times)]

    what = f"{path}: column {column!r}"
    values = _fill(values, fill, what, labels)
    covs = [_fill(c, fill, f"{path}: column {name!r}", labels) for c, name in zip(covs, covariates)]
    return Series(
        values,
        name=f"{path.name}:{column}",
        covariates=np.stack(covs, axis=1) if covs else None,
        covariate_names=list(covariates),
        times=times,
        freq=freq,
    )


def _label(t: Any) -> str:
    """A timestamp as a user wrote it: the date alone when there is no time of day."""
    return str(t.date()) if t == t.normalize() else str(t)


def _infer_freq(times: Any) -> str | None:
    """A regular frequency for dates: pandas' guess, else the most common step among
    calendar steps (month / quarter / year starts or ends, days, hours...)."""
    import pandas as pd

    if len(times) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 announces an offset return type
        guess = pd.infer_freq(times)
    if guess:
        return guess if isinstance(guess, str) else guess.freqstr
    # Irregular because of gaps: try the common calendar frequencies on the first steps.
    for alias in ("MS", "ME", "QS", "QE", "YS", "YE", "W", "D", "h", "min", "s"):
        try:
            grid = pd.date_range(times[0], times[-1], freq=alias)
        except ValueError:
            continue
        if len(times) <= len(grid) <= 2 * len(times) and times.isin(grid).all():
            return alias
    return None


# ---------------------------------------------------------------------------
# Splits, transforms, scaling and windows


def span_length(size: int | float, n: int, what: str) -> int:
    """`size` points, or a fraction of the series if it is a float below 1."""
    if isinstance(size, float) and size < 1:
        return int(round(size * n))
    if isinstance(size, float) and not size.is_integer():
        raise SeriesError(f"data.{what} = {size}: give a whole number of points or a fraction below 1")
    return int(size)


@dataclass(frozen=True)
class Spans:
    n_train: int
    n_val: int
    n_test: int

    @property
    def val_start(self) -> int:
        return self.n_train

    @property
    def test_start(self) -> int:
        return self.n_train + self.n_val

    @property
    def total(self) -> int:
        return self.n_train + self.n_val + self.n_test


def split_spans(n: int, window: int, horizon: int, val_size: int | float, test_size: int | float, name: str) -> Spans:
    """Train / val / test span lengths of a series of n points, checked to be usable."""
    n_test = span_length(test_size, n, "test_size")
    n_val = span_length(val_size, n, "val_size")
    if n_test < horizon:
        raise SeriesError(
            f"{name}: the test span ({n_test} points) is shorter than the horizon ({horizon}); "
            f"set data.test_size to at least {horizon}"
        )
    if 0 < n_val < horizon:
        raise SeriesError(
            f"{name}: the val span ({n_val} points) is shorter than the horizon ({horizon}); "
            f"set data.val_size to 0 or at least {horizon}"
        )
    n_train = n - n_val - n_test
    if n_train < window + horizon:
        raise SeriesError(
            f"{name}: too short: {n} points, but window {window} + horizon {horizon} = {window + horizon} "
            f"training points are needed besides val {n_val} + test {n_test}, i.e. at least "
            f"{window + horizon + n_val + n_test} points (the train span has {max(n_train, 0)}). "
            f"Shorten data.window, model.horizon, data.val_size or data.test_size, or use a longer series."
        )
    return Spans(n_train, n_val, n_test)


def apply_transform(values: np.ndarray, transform: str, name: str = "series") -> np.ndarray:
    if transform == "none":
        return values
    if transform == "log":
        if (values <= 0).any():
            i = int(np.flatnonzero(values <= 0)[0])
            raise SeriesError(
                f"{name}: data.transform = 'log' needs positive values; point {i} is {values[i]:g}"
            )
        return np.log(values)
    raise SeriesError(f"unknown data.transform {transform!r}")


def invert_transform(values: Any, transform: str) -> Any:
    """Inverse of `apply_transform`, for numpy arrays or torch tensors."""
    if transform == "none":
        return values
    if isinstance(values, torch.Tensor):
        return values.exp()
    return np.exp(values)


@dataclass
class Scaler:
    """Per-feature affine scaling, fitted on the train span only."""

    shift: np.ndarray  # [F]
    scale: np.ndarray  # [F]

    @classmethod
    def fit(cls, train: np.ndarray, how: str) -> Scaler:
        """`train`: [N, F] pooled train-span rows (already transformed)."""
        f = train.shape[1]
        if how == "none":
            return cls(np.zeros(f), np.ones(f))
        if how == "standard":
            shift, scale = train.mean(0), train.std(0)
        elif how == "minmax":
            shift, scale = train.min(0), train.max(0) - train.min(0)
        else:
            raise SeriesError(f"unknown data.scale {how!r}")
        scale = np.where(scale > 1e-12, scale, 1.0)  # constant column: shift only
        return cls(shift, scale)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.shift) / self.scale

    def to_info(self) -> dict[str, list[float]]:
        return {"shift": [float(v) for v in self.shift], "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_info(cls, info: dict[str, list[float]]) -> Scaler:
        return cls(np.asarray(info["shift"], dtype=np.float64), np.asarray(info["scale"], dtype=np.float64))


def origins(spans: Spans, window: int, horizon: int, split: str, stride: int = 1) -> np.ndarray:
    """Origins (index of the first target) of a split's windows; see the module docstring."""
    if split == "train":
        first, last = window, spans.n_train - horizon
        return np.arange(last, first - 1, -stride)[::-1]  # stride counted back from the newest window
    start, length = (spans.val_start, spans.n_val) if split == "val" else (spans.test_start, spans.n_test)
    first, last = max(start, window), start + length - horizon
    return np.arange(first, last + 1) if length else np.arange(0)


def make_windows(z: np.ndarray, at: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs [N, window, F] = z[t-window:t] and targets [N, horizon] = z[t:t+horizon, 0]."""
    if len(at) == 0:
        return np.zeros((0, window, z.shape[1])), np.zeros((0, horizon))
    steps = np.arange(window)[None, :] + (at[:, None] - window)
    ahead = np.arange(horizon)[None, :] + at[:, None]
    return z[steps], z[ahead, 0]


def mase_scale(train_values: np.ndarray, season_length: int) -> float:
    """In-sample MAE of the seasonal naive forecast on the train span (original units).

    MASE = MAE / this.  Falls back to lag 1 when the train span is not longer than
    one season, and to 1.0 for a constant train span (so MASE is the MAE).
    """
    m = season_length if len(train_values) > season_length else 1
    diffs = np.abs(train_values[m:] - train_values[:-m])
    scale = float(diffs.mean()) if len(diffs) else 0.0
    return scale if scale > 1e-12 else 1.0


def to_tensor(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
