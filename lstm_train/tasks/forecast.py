"""Forecast the next `horizon` values of a series from a window of its past.

Sources: `sine` (pytorch/examples' synthetic waves), `airline` (pmdarima),
`co2` and `sunspots` (statsmodels), or `csv` (your own file).  The series is
cut by time into train / val / test spans (see `lstm_train.data.series.windows`);
the scaler, the MASE scale and the classical model's parameters come from the
train span only.  The val windows (targets in the val span) pick the best
checkpoint by MASE.  After training, `finish` scores the LSTM and the baselines
(naive, seasonal naive, a classical model) on exactly the same test windows and
draws the forecast against the truth.

The task holds no data between calls: everything evaluation, `finish` and
`predict` need is in `Splits.info` (saved in every checkpoint) or in the model
built from it, including the series themselves in original units (the baselines
and the plot need their history; the sines are the largest, 100 x 1000 values).

Metrics (`result.json`): `test_loss` / `test_mse` = MSE in scaled units (what is
trained), `test_mae`, `test_rmse` (original units), `test_mase` (MAE over the
train span's in-sample seasonal naive MAE with `data.season_length`),
`test_smape` (percent); `baselines: {naive: {...}, seasonal_naive: {...},
<classical>: {...}}` with the same four metrics; `forecast_plot`.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import forecast_baselines as baselines
from ..data.series import Series, SeriesError, csvfile, sources
from ..files.outputs import png_bytes, write_run_output
from ..data.series import windows as W
from ..models.forecaster import LSTMForecaster
from ..schema import ConfigError
from .base import ExportSignature, Split, Splits, Task, note
from .registry import BUILTIN_TASKS
from .sections.forecast import ForecastData


MAX_CSV_BYTES = 256 << 20  # `evaluate`'s bound on a series CSV (pandas reads it whole)


def season_length(data: ForecastData, first: Series) -> int:
    """data.season_length, else the source's (csv: from the time column's frequency, else 1)."""
    if data.season_length is not None:
        return data.season_length
    if data.source == "sine":
        return sources.sine_season_length(data.sine.period)
    if data.source == "csv":
        return sources.season_from_freq(first.freq)
    return sources.SEASON_LENGTH[data.source]


def load_series(data: ForecastData) -> list[Series]:
    if data.source == "sine":
        c = data.sine
        return sources.sine_series(c.series, c.length, c.period, c.noise, c.seed)
    if data.source == "csv":
        return [csvfile.read_csv(data.path, data.column, data.time_column, data.covariates, data.fill)]
    return [sources.BUILT_IN[data.source]()]


def scaled_features(series: list[Series], n_train: int, transform: str, scale: str) -> tuple[W.Scaler, list[np.ndarray]]:
    """Every series' features [T, 1 + C], target transformed, scaled with statistics
    fitted on the train span of all series together."""
    feats = []
    for s in series:
        f = s.features().copy()
        f[:, 0] = W.apply_transform(f[:, 0], transform, s.name)
        feats.append(f)
    scaler = W.Scaler.fit(np.concatenate([f[:n_train] for f in feats]), scale)
    return scaler, [scaler.apply(f) for f in feats]


def split_windows(
    series: list[Series], scaled: list[np.ndarray], at: np.ndarray, window: int, horizon: int, mase: list[float]
) -> tuple[torch.Tensor, ...]:
    """The windows at origins `at` of every series, series after series: inputs [N, window, F]
    and targets [N, horizon] in scaled units, the targets in original units [N, horizon]
    and each window's MASE scale [N] (all float32, like every column the loop moves)."""
    xs, ys, truth, denom = [], [], [], []
    ahead = at[:, None] + np.arange(horizon)[None, :]
    for s, z, scale in zip(series, scaled, mase):
        x, y = W.make_windows(z, at, window, horizon)
        xs.append(x)
        ys.append(y)
        truth.append(s.values[ahead])
        denom.append(np.full(len(at), scale))
    return tuple(W.to_tensor(np.concatenate(column)) for column in (xs, ys, truth, denom))


class ForecastTask(Task):
    registration = BUILTIN_TASKS["forecast"]
    primary_metric = "mase"  # scale-free, comparable across series and with the baselines
    higher_is_better = False
    # fp32 under `train.mixed_precision: auto`.  Measured (10 seeds, bf16 vs fp32 with the same
    # seed, AVX512-BF16 CPU): bf16 made jobs/sine_forecast.yaml's test MASE 13% worse (0.309 vs
    # 0.273; worse in 9 of 10 pairs).  bf16 keeps 8 bits of mantissa (values near 1 in steps of
    # 1/128), coarse beside that job's test RMSE of 0.004; an fp32 output layer won back only a
    # quarter of the gap.  The airline and co2 jobs came out equal to 0.001 MASE and no faster.
    precision = "fp32"

    # ------------------------------------------------------------------ data

    def load_data(self) -> Splits:
        data, horizon = self.job.data, self.job.model.horizon
        series = load_series(data)
        m, window = season_length(data, series[0]), data.window
        if self.job.model.residual == "seasonal" and window < m:
            raise ConfigError(
                f"model.residual = 'seasonal' needs data.window >= the season length {m}; data.window is {window}"
            )
        lengths = {len(s) for s in series}
        if len(lengths) != 1:
            raise SeriesError(f"series of different lengths {sorted(lengths)}")
        first = series[0]
        spans = W.split_spans(len(first), window, horizon, data.val_size, data.test_size, first.name)
        scaler, scaled = scaled_features(series, spans.n_train, data.transform, data.scale)
        mase = [W.mase_scale(s.values[: spans.n_train], m) for s in series]

        def windows(split: str, stride: int = 1) -> tuple[torch.Tensor, ...]:
            return split_windows(series, scaled, W.origins(spans, window, horizon, split, stride), window, horizon, mase)

        train = windows("train", data.stride)[:2]
        if len(train[0]) == 0:
            raise SeriesError(f"{first.name}: no training windows; lower data.window or data.stride")
        info = {
            "source": data.source,
            "series_name": first.name,
            "n_series": len(series),
            "window": window,
            "horizon": horizon,
            "season_length": m,
            "input_size": int(train[0].shape[-1]),
            "transform": data.transform,
            "scaler": scaler.to_info(),
            "column": data.column,
            "time_column": data.time_column,
            "covariates": list(first.covariate_names),
            "fill": data.fill,
            "freq": first.freq,
            "spans": spans.to_info(),
            "mase_scale": mase,
            "classical": baselines.classical_method(data.classical, m, len(series)),
            "ar_order": data.ar_order or window,
            # Every series in original units: the baselines and the plot in `finish` need
            # their history, and `predict` with no input continues the first one.
            "series": {
                "names": [s.name for s in series],
                "values": [s.values.tolist() for s in series],
                "covariates": None if first.covariates is None else first.covariates.tolist(),
                "times": None if first.times is None else [str(t) for t in first.times],
            },
        }
        val = windows("val") if spans.n_val else None
        return Splits(train=train, test=windows("test"), val=val, info=info)

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        return LSTMForecaster(
            info["input_size"], m.hidden_size, m.num_layers, info["horizon"], info["window"],
            m.bidirectional, m.dropout, m.residual, info["season_length"], m.relative_inputs,
            target_shift=info["scaler"]["shift"][0], target_scale=info["scaler"]["scale"][0],
            log_target=info["transform"] == "log",
        )

    # -------------------------------------------------------- train and eval

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], info: dict[str, Any]) -> torch.Tensor:
        x, y = batch[:2]
        return F.mse_loss(model(x).float(), y)

    def eval_sums(self, model: nn.Module, batch: tuple[torch.Tensor, ...],
                  info: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, y, truth, denom = batch
        pred = model(x).float()
        orig = model.to_original(pred.double())
        truth, denom = truth.double(), denom.double()
        err = (orig - truth).abs()
        both = truth.abs() + orig.abs()
        return {
            "sq_sum": ((pred - y) ** 2).sum(),
            "abs_sum": err.sum(),
            "orig_sq_sum": (err**2).sum(),
            "scaled_abs_sum": (err / denom[:, None]).sum(),
            "smape_sum": torch.where(both > 0, 2 * err / both.clamp_min(1e-300), torch.zeros_like(err)).sum(),
            "count": torch.tensor(err.numel(), device=x.device),
            "windows": torch.tensor(len(x), device=x.device),
        }

    def export_signature(self, batch: tuple[torch.Tensor, ...], info: dict[str, Any]) -> ExportSignature:
        """Windows float [batch, data.window, features] in scaled units (feature 0 the target) -> the
        next `horizon` values [batch, horizon], scaled; the metadata has the scaler (value * scale +
        shift, then exp for transform log).  The window length is part of the model (residual and
        seasonal positions), so only the batch axis varies."""
        meta = {k: info[k] for k in ("window", "horizon", "input_size", "transform", "scaler", "covariates")}
        return ExportSignature({"x": batch[0].float()}, {"x": {0: "batch"}}, ["forecast"], metadata=meta)

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        n = max(sums["count"], 1)
        mse = sums["sq_sum"] / n
        return {
            f"{prefix}loss": mse,
            f"{prefix}mse": mse,
            f"{prefix}mae": sums["abs_sum"] / n,
            f"{prefix}rmse": math.sqrt(sums["orig_sq_sum"] / n),
            f"{prefix}mase": sums["scaled_abs_sum"] / n,
            f"{prefix}smape": 100 * sums["smape_sum"] / n,
            f"{prefix}windows": int(sums["windows"]),
        }

    # ----------------------------------------------------- baselines, plot

    @torch.no_grad()
    def forecast_windows(self, model: nn.Module, x: torch.Tensor, batch: int = 4096) -> np.ndarray:
        """Model forecasts in original units, [N, horizon] float64."""
        net = model
        net.eval()
        device = next(net.parameters()).device
        out = [net.to_original(net(x[i : i + batch].to(device)).double()).cpu() for i in range(0, len(x), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, net.horizon))

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        info = splits.info
        horizon, m, method = info["horizon"], info["season_length"], info["classical"]
        spans = W.Spans.from_info(info["spans"])
        at = W.origins(spans, info["window"], horizon, "test")
        history = info["series"]
        lstm_all = self.forecast_windows(model, splits.test[0])
        methods = ["lstm", "naive", "seasonal_naive"] + ([method] if method != "none" else [])
        scores = {k: baselines.Scores() for k in methods}
        plotted: list[dict[str, Any]] = []
        with one_blas_thread():
            for i, (name, values) in enumerate(zip(history["names"], history["values"])):
                y = np.asarray(values, dtype=np.float64)
                preds = {"lstm": lstm_all[i * len(at) : (i + 1) * len(at)], **self.baseline_forecasts(y, at, info)}
                truth = y[at[:, None] + np.arange(horizon)[None, :]]
                for k, p in preds.items():
                    scores[k].add(truth, p, info["mase_scale"][i])
                if i < self.job.data.plot_series:
                    plotted.append({"name": name, "values": y, "preds": preds})
        table = {k: v.result() for k, v in scores.items()}
        text = baselines.table({("LSTM" if k == "lstm" else k): v for k, v in table.items()})
        header = (
            f"{info['series_name']}: {len(at)} test origin(s) x {len(history['values'])} series, horizon {horizon}, "
            f"season length {m} (MASE scale: train-span seasonal naive MAE)"
        )
        write_run_output(run_dir, "forecast_table.txt", header + "\n" + text + "\n")
        note(header + "\n" + text)
        plot = run_dir / "forecast.png"
        plot_forecasts(plot, plotted, history["times"], spans, at, horizon, m, method)
        return {
            "baselines": {k: v for k, v in table.items() if k != "lstm"},
            "lstm": table["lstm"],
            "classical_model": method,
            "season_length": m,
            "test_origins": int(len(at)),
            "forecast_plot": str(plot),
            "images": {"forecast": str(plot)},
        }

    @staticmethod
    def baseline_forecasts(y: np.ndarray, at: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """Naive, seasonal naive and the classical model's forecasts [N, horizon] from origins `at`
        of one series `y` (original units); the classical model fitted on its train span."""
        horizon, m, method = info["horizon"], info["season_length"], info["classical"]
        preds = {"naive": baselines.naive(y, at, horizon), "seasonal_naive": baselines.seasonal_naive(y, at, horizon, m)}
        if method != "none":
            z = W.apply_transform(y, info["transform"])
            n_train = info["spans"]["train"]
            preds[method] = W.invert_transform(
                baselines.classical(method, z, n_train, at, horizon, m, info["ar_order"]), info["transform"]
            )
        return preds

    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        """Series CSV files for `evaluate` (the run's column, time column and covariates where a file
        has them, else its only value column, as `predict --csv` reads): every window of each file
        whose `data.window` inputs and `horizon` targets it holds (origins every step, as the test
        span's), scaled with the run's scaler.  MASE is in the run's units: the train span's seasonal
        naive MAE of the series a file continues (the i-th file the run's i-th series when there are
        as many; one series: its scale for every file).  A file holding the run's test span with the
        `data.window` points before it scores exactly the run's test windows."""
        window, horizon, scales = info["window"], info["horizon"], info["mase_scale"]
        if len(scales) > 1 and len(files) != len(scales):
            raise SeriesError(f"{files[0]}: this run forecast {len(scales)} series; give one CSV per series, in the "
                              f"run's order ({len(files)} given): their MASE is measured with each series' own scale")
        scaler, columns = W.Scaler.from_info(info["scaler"]), []
        for i, path in enumerate(files):
            if path.is_file() and path.stat().st_size > MAX_CSV_BYTES:
                raise SeriesError(f"{path}: over {MAX_CSV_BYTES >> 20} MiB, more than a series CSV this reads")
            s = csvfile.read_for_predict(path, info["column"], info["time_column"], info["covariates"], info["fill"])
            if s.features().shape[1] != info["input_size"]:
                raise SeriesError(f"{path}: {s.features().shape[1] - 1} covariate(s), the run reads "
                                  f"{info['input_size'] - 1} ({', '.join(info['covariates']) or 'none'})")
            if len(s) < window + horizon:
                raise SeriesError(f"{path}: {len(s)} values; a window of {window} inputs and {horizon} targets needs "
                                  f"at least {window + horizon}")
            feats = s.features().copy()
            feats[:, 0] = W.apply_transform(feats[:, 0], info["transform"], str(path))
            at = np.arange(window, len(s) - horizon + 1)
            columns.append(split_windows([s], [scaler.apply(feats)], at, window, horizon, [scales[i % len(scales)]]))
        return tuple(torch.cat(parts) for parts in zip(*columns))

    # --------------------------------------------------------------- predict

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """Next `horizon` values after the end of a series.

        The series comes from `--csv FILE` (the run's column / time column when the
        file has them, else its only value column and a date-like column), from
        numbers given as inputs, from a single CSV path given as input, or, with
        none of these, is the run's own (first) series, kept in the checkpoint.
        One line per step: time label (or t+k) and value.
        """
        import pandas as pd

        window, horizon = info["window"], info["horizon"]
        csv = options.get("csv")
        if not csv and len(inputs) == 1 and not _is_number(inputs[0]):
            csv = inputs[0]
        times, freq = None, None
        if csv:
            s = csvfile.read_for_predict(csv, info["column"], info["time_column"], info["covariates"], info["fill"])
            feats, times, freq = s.features(), s.times, s.freq
            where = f"{csv}"
        elif not inputs:  # no series given: continue the run's own series past its end
            history = info["series"]
            feats = np.asarray(history["values"][0], dtype=np.float64)[:, None]
            if history["covariates"] is not None:
                feats = np.concatenate([feats, np.asarray(history["covariates"], dtype=np.float64)], axis=1)
            if history["times"] is not None:
                times, freq = pd.DatetimeIndex(history["times"]), info["freq"]
            where = f"the end of {info['series_name']}"
        else:
            bad = [v for v in inputs if not _is_number(v)]
            if bad:
                raise ValueError(f"predict: {bad[0]!r} is neither a number nor a CSV file (use --csv FILE)")
            if info["covariates"]:
                raise ValueError(f"this model also reads covariates {info['covariates']}: give a CSV with --csv")
            feats = np.asarray([float(v) for v in inputs], dtype=np.float64)[:, None]
            where = "the values given"
        if len(feats) < window:
            raise ValueError(f"{where}: {len(feats)} values, but the model reads windows of {window}; give at least {window}")
        feats = feats[-window:].copy()
        feats[:, 0] = W.apply_transform(feats[:, 0], info["transform"], where)
        x = W.to_tensor(W.Scaler.from_info(info["scaler"]).apply(feats))[None]
        with torch.no_grad():
            values = model.to_original(model(x).double())[0].tolist()
        labels = [f"t+{k + 1}" for k in range(horizon)]
        if times is not None and freq is not None:
            future = pd.date_range(times[-1], periods=horizon + 1, freq=freq)[1:]
            labels = [str(t.date()) if t == t.normalize() else str(t) for t in future]
        return [f"{label}\t{value:.6g}" for label, value in zip(labels, values)]


def one_blas_thread() -> Any:
    """Small least-squares / state-space fits run ~100x slower when OpenBLAS spreads
    them over busy cores: one thread for the baselines (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plot_forecasts(
    path: Path, plotted: list[dict[str, Any]], times: list[str] | None, spans: W.Spans, at: np.ndarray,
    horizon: int, m: int, method: str,
) -> None:
    """History, truth and forecasts over the test span (non-overlapping origins), one panel per series."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = len(plotted)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.2 * rows), squeeze=False)
    chosen = np.arange(0, len(at), horizon)  # origins whose forecasts tile the test span
    styles = {"lstm": ("LSTM", "C3", "-"), "seasonal_naive": ("seasonal naive", "C2", ":"), method: (method, "C1", "--")}
    xs = pd.DatetimeIndex(times) if times is not None else np.arange(spans.total)
    shown_from = max(0, spans.test_start - max(4 * spans.n_test, 3 * m, horizon * 4))
    for ax, item in zip(axes[:, 0], plotted):
        y = item["values"]
        ax.plot(xs[shown_from : spans.test_start + 1], y[shown_from : spans.test_start + 1], color="0.35", lw=1.2, label="history")
        ax.plot(xs[spans.test_start :], y[spans.test_start :], color="k", lw=1.6, label="truth (test)")
        for key, (label, color, ls) in styles.items():
            if key not in item["preds"] or key == "none":
                continue
            for j, c in enumerate(chosen):
                t = at[c]
                ax.plot(xs[t : t + horizon], item["preds"][key][c], color=color, ls=ls, lw=1.6,
                        label=label if j == 0 else None, zorder=3 if key == "lstm" else 2)
        ax.axvline(xs[spans.test_start], color="0.6", lw=0.8)
        if spans.n_val:
            ax.axvline(xs[spans.val_start], color="0.8", lw=0.8, ls="--")
        ax.set_title(item["name"], fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    data = png_bytes(fig, dpi=110)
    plt.close(fig)
    write_run_output(path.parent, path.name, data)


TASK = ForecastTask
