"""A series from your own CSV file, every problem reported with the file, column and line.

Reading goes in four steps, each its own function: the header and the choice of
columns (`read_frame`, `choose_column`), the numbers (`parse_numbers`: missing
markers become NaN, anything else that is not a number is an error naming its
line), the time column (`time_axis`: dates in increasing order; with a regular
frequency, missing timestamps become gaps like empty cells), and the filling of
gaps and missing values (`fill_missing`: refused unless `data.fill` says how).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import Series, SeriesError

MISSING = {"", "na", "nan", "null", "none", "n/a", "-", "?"}
# Column names `predict` takes for the time column when the run's own is not in the file.
TIME_NAMES = ("date", "time", "month", "year", "ds", "timestamp", "datetime", "period", "week", "day")


def read_csv(
    path: str | Path,
    column: str | None = None,
    time_column: str | None = None,
    covariates: list[str] = (),
    fill: str = "error",
) -> Series:
    """The series in `column` (with `covariates` beside it) of a CSV file.

    * `column`: the target; if omitted the file must have exactly one column
      besides `time_column` and the covariates.
    * `time_column`: parsed as dates; must be increasing.  With a regular
      frequency (inferred), missing timestamps are gaps like empty cells.
    * `fill`: 'error' (default) refuses gaps and missing values; 'interpolate'
      fills them linearly, 'ffill' repeats the last value.
    """
    path = Path(path)
    frame = read_frame(path)
    column = choose_column(list(frame.columns), path, column, time_column, covariates)
    if len(frame) == 0:
        raise SeriesError(f"{path}: no data rows under the header")
    names = [column, *covariates]
    table = {name: parse_numbers(frame[name].tolist(), path, name) for name in names}
    times, freq, labels = None, None, [f"line {i + 2}" for i in range(len(frame))]
    if time_column is not None:
        axis = time_axis(frame[time_column], path, time_column, fill)
        times, freq, labels = axis.times, axis.freq, axis.labels
        table = {name: axis.place(values) for name, values in table.items()}
    table = {name: fill_missing(values, fill, f"{path}: column {name!r}", labels) for name, values in table.items()}
    return Series(
        table[column],
        name=f"{path.name}:{column}",
        covariates=np.stack([table[c] for c in covariates], axis=1) if covariates else None,
        covariate_names=list(covariates),
        times=times,
        freq=freq,
    )


def read_for_predict(
    path: str | Path, column: str | None, time_column: str | None, covariates: list[str], fill: str
) -> Series:
    """A CSV given to `predict`: the run's own column names where the file has them; else
    its only value column, and the first column named like a date as the time column."""
    header = list(read_frame(Path(path), nrows=0, given_as=f"--csv {str(path)!r}").columns)
    if time_column not in header:
        time_column = next((c for c in header if c.lower() in TIME_NAMES), None)
    if column not in header:
        column = None  # read_csv: the only column left, or an error listing them
    return read_csv(path, column, time_column, covariates, fill)


# ---------------------------------------------------------------------------
# The header and the columns


def read_frame(path: Path, nrows: int | None = None, given_as: str | None = None) -> Any:
    """The file as a pandas DataFrame of strings (nothing guessed), column names stripped.
    `given_as`: how the user named the file, for messages (default: data.path = ...)."""
    import pandas as pd

    given_as = given_as or f"data.path = {str(path)!r}"
    if not path.exists():
        raise SeriesError(f"{given_as}: file not found")
    if path.is_dir():
        raise SeriesError(f"{given_as} is a folder, not a CSV file")
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig", nrows=nrows
        )
    except pd.errors.EmptyDataError:
        raise SeriesError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SeriesError(f"{path}: not a readable CSV file ({e})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def choose_column(
    columns: list[str], path: Path, column: str | None, time_column: str | None, covariates: list[str]
) -> str:
    """The target column (the only one left when not named); every named column checked."""
    listed = ", ".join(map(repr, columns))

    def need(name: str, key: str) -> None:
        if name not in columns:
            raise SeriesError(f"{path}: {key} = {name!r} is not a column; the columns are: {listed}")

    if time_column is not None:
        need(time_column, "data.time_column")
    if column is None:
        others = [c for c in columns if c != time_column and c not in covariates]
        if len(others) != 1:
            raise SeriesError(f"{path}: set data.column to the column to forecast; the columns are: {listed}")
        column = others[0]
    need(column, "data.column")
    for name in covariates:
        need(name, "data.covariates")
    return column


# ---------------------------------------------------------------------------
# Numbers


def parse_numbers(raw: list[str], path: Path, column: str) -> np.ndarray:
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


# ---------------------------------------------------------------------------
# The time column and its gaps


@dataclass
class TimeAxis:
    """Where each data row sits in time: the rows' own dates, or the regular grid of
    their frequency when rows are missing from it (gaps)."""

    times: Any  # pandas DatetimeIndex, one per position
    freq: str | None
    rows: np.ndarray  # int [rows]: the position of each data row
    labels: list[str]  # per position, for messages: "line 5 (2000-01-04)" or "2000-05-01 (no row)"

    def place(self, values: np.ndarray) -> np.ndarray:
        """Row values on the axis, NaN at the gaps."""
        out = np.full(len(self.times), np.nan)
        out[self.rows] = values
        return out


def time_axis(raw: Any, path: Path, time_column: str, fill: str) -> TimeAxis:
    """The time column's dates, checked increasing, with gaps in its frequency found
    (and refused when `fill` is 'error')."""
    import pandas as pd

    times = parse_times(raw, path, time_column)
    freq = infer_freq(times)
    rows = np.arange(len(times))
    if freq is not None:
        grid = pd.date_range(times[0], times[-1], freq=freq)
        if len(grid) != len(times):
            gaps = list(grid[~grid.isin(times)])
            if fill == "error":
                shown = ", ".join(_label(t) for t in gaps[:5]) + (" ..." if len(gaps) > 5 else "")
                raise SeriesError(
                    f"{path}: time column {time_column!r} has {len(gaps)} gap(s) in its {freq} steps "
                    f"(missing: {shown}). Fix the file, or set data.fill to 'interpolate' or 'ffill' to fill them."
                )
            times, rows = grid, grid.get_indexer(times)
    labels = [f"{_label(t)} (no row)" for t in times]
    for i, j in enumerate(rows):
        labels[j] = f"line {i + 2} ({_label(times[j])})"
    return TimeAxis(times, freq, rows, labels)


def parse_times(raw: Any, path: Path, time_column: str) -> Any:
    """A column of strings -> DatetimeIndex; an unreadable date or a step back names its line."""
    import pandas as pd

    raw = raw.str.strip()
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
    return times


def infer_freq(times: Any) -> str | None:
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


def _label(t: Any) -> str:
    """A timestamp as a user wrote it: the date alone when there is no time of day."""
    return str(t.date()) if t == t.normalize() else str(t)


# ---------------------------------------------------------------------------
# Filling


def fill_missing(values: np.ndarray, how: str, what: str, labels: list[str]) -> np.ndarray:
    """Fill NaNs by `how` (interpolate / ffill) or, for 'error', refuse naming the first few."""
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
    if how == "interpolate":
        out = values.copy()
        out[missing] = np.interp(missing, present, values[present])
        return out
    # ffill; leading gaps take the first value
    idx = np.where(np.isnan(values), 0, np.arange(len(values)))
    np.maximum.accumulate(idx, out=idx)
    out = values[idx]
    out[np.isnan(out)] = values[present[0]]
    return out
