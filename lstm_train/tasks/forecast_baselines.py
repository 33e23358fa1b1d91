"""The forecasts every forecaster is compared with, and the error metrics.

All methods forecast from the same *origins* t (the index of the first target;
see `lstm_train.data.series.windows`) the next `horizon` values, so every method is
scored on exactly the same test windows as the LSTM:

* naive:           y^[t+k] = y[t-1]
* seasonal naive:  y^[t+k] = y[t+k - m*(k//m + 1)]   (m = season length)
* classical:
  - sarima: SARIMA(0,1,1)(0,1,1)_m (Box & Jenkins' "airline model"), fitted on
    the train span, then at each origin re-filtered with those fixed
    parameters through y[:t] and forecast `horizon` steps;
  - ets: Holt-Winters exponential smoothing (additive trend, additive season
    when m > 1), same protocol;
  - ar: AR(p) by least squares on the train span, forecast recursively.
  The classical models work on the transformed series (e.g. log) like the LSTM.

Metrics over all forecast points (original units):

* MAE, RMSE;
* MASE = mean(|e| / s), s = in-sample MAE of the seasonal naive forecast on
  the series' train span (`windows.mase_scale`), per series;
* sMAPE = 100 * mean(2|e| / (|y| + |y^|))  (0 where both are 0), in percent.
"""

from __future__ import annotations

import warnings

import numpy as np


def naive(y: np.ndarray, at: np.ndarray, horizon: int) -> np.ndarray:
    """[N, horizon]: the last observed value, repeated."""
    return np.repeat(y[at - 1][:, None], horizon, axis=1)


def seasonal_naive(y: np.ndarray, at: np.ndarray, horizon: int, season_length: int) -> np.ndarray:
    """[N, horizon]: the value one season (or whole seasons) before each target."""
    m = max(1, season_length)
    k = np.arange(horizon)
    lag = m * (k // m + 1)  # the most recent observed value at the same phase
    index = at[:, None] + k[None, :] - lag[None, :]
    if (index < 0).any():
        raise ValueError(f"seasonal naive needs {m} points of history before every origin")
    return y[index]


def ar(z: np.ndarray, n_fit: int, at: np.ndarray, horizon: int, order: int) -> np.ndarray:
    """AR(order) with intercept, least squares on z[:n_fit], recursive forecasts from each origin."""
    p = max(1, min(order, n_fit // 3))
    rows = np.stack([z[i : n_fit - p + i] for i in range(p)], axis=1)  # lags oldest..newest
    design = np.concatenate([np.ones((len(rows), 1)), rows], axis=1)
    coef, *_ = np.linalg.lstsq(design, z[p:n_fit], rcond=None)
    if (at < p).any():
        raise ValueError(f"AR({p}) needs {p} points of history before every origin")
    hist = z[at[:, None] - p + np.arange(p)[None, :]]  # [N, p]
    out = np.empty((len(at), horizon))
    for k in range(horizon):
        nxt = coef[0] + hist @ coef[1:]
        out[:, k] = nxt
        hist = np.concatenate([hist[:, 1:], nxt[:, None]], axis=1)
    return out


def sarima(z: np.ndarray, n_fit: int, at: np.ndarray, horizon: int, season_length: int) -> np.ndarray:
    """SARIMA(0,1,1)(0,1,1)_m fitted on z[:n_fit]; forecasts from each origin with fixed parameters."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    m = season_length
    seasonal = (0, 1, 1, m) if m > 1 else (0, 0, 0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = SARIMAX(z[:n_fit], order=(0, 1, 1), seasonal_order=seasonal).fit(disp=False)
        return np.stack([np.asarray(fit.apply(z[:t]).forecast(horizon)) for t in at])


def ets(z: np.ndarray, n_fit: int, at: np.ndarray, horizon: int, season_length: int) -> np.ndarray:
    """Holt-Winters (additive trend and season) fitted on z[:n_fit]; fixed-parameter forecasts per origin."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    m = season_length
    spec = {"error": "add", "trend": "add", "damped_trend": False}
    if m > 1 and n_fit >= 2 * m + 2:
        spec.update(seasonal="add", seasonal_periods=m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = ETSModel(z[:n_fit], **spec).fit(disp=False).params
        return np.stack([np.asarray(ETSModel(z[:t], **spec).smooth(params).forecast(horizon)) for t in at])


def classical_method(name: str, season_length: int, n_series: int) -> str:
    """`auto` -> sarima for one seasonal series with a season up to 52, else ar."""
    if name != "auto":
        return name
    return "sarima" if n_series == 1 and 1 < season_length <= 52 else "ar"


def classical(
    name: str, z: np.ndarray, n_fit: int, at: np.ndarray, horizon: int, season_length: int, ar_order: int
) -> np.ndarray:
    """Forecasts (transformed units) of the classical model `name`."""
    if name == "sarima":
        return sarima(z, n_fit, at, horizon, season_length)
    if name == "ets":
        return ets(z, n_fit, at, horizon, season_length)
    if name == "ar":
        return ar(z, n_fit, at, horizon, ar_order)
    raise ValueError(f"unknown classical model {name!r}")


class Scores:
    """Additive error sums over forecast points; `result()` gives MAE, RMSE, MASE, sMAPE."""

    def __init__(self) -> None:
        self.n = 0
        self.abs = self.sq = self.scaled = self.smape = 0.0

    def add(self, truth: np.ndarray, pred: np.ndarray, scale: float | np.ndarray) -> Scores:
        truth, pred = np.asarray(truth, np.float64), np.asarray(pred, np.float64)
        err = np.abs(pred - truth)
        denom = np.abs(truth) + np.abs(pred)
        self.n += err.size
        self.abs += float(err.sum())
        self.sq += float((err**2).sum())
        self.scaled += float((err / scale).sum())
        self.smape += float(np.where(denom > 0, 2 * err / np.where(denom > 0, denom, 1), 0.0).sum())
        return self

    def result(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            "mae": self.abs / n,
            "rmse": (self.sq / n) ** 0.5,
            "mase": self.scaled / n,
            "smape": 100 * self.smape / n,
        }


def scores(truth: np.ndarray, pred: np.ndarray, scale: float | np.ndarray) -> dict[str, float]:
    """MAE, RMSE, MASE, sMAPE of forecasts `pred` against `truth` (same shape)."""
    return Scores().add(truth, pred, scale).result()




def table(rows: dict[str, dict[str, float]]) -> str:
    """A plain-text table: method, MAE, RMSE, MASE, sMAPE."""
    head = f"{'method':<16}{'MAE':>11}{'RMSE':>11}{'MASE':>9}{'sMAPE%':>9}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<16}{r['mae']:>11.4g}{r['rmse']:>11.4g}{r['mase']:>9.3f}{r['smape']:>9.2f}")
    return "\n".join(lines)
