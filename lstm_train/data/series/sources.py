"""Where series come from besides a CSV file: data sets that ship with pmdarima and
statsmodels (offline), pytorch/examples' synthetic sine waves, and each source's
usual season length (the seasonal naive forecast, MASE's scale, SARIMA)."""

from __future__ import annotations

import math

import numpy as np

from . import Series

# Default season length per built-in source.
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
    """One wavelength, 2*pi*T steps, rounded."""
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


BUILT_IN = {"airline": airline, "co2": co2, "sunspots": sunspots}
