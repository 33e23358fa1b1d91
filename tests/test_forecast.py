"""Forecasting: time splits without leakage, train-only scaling, baselines checked by
hand, CSV errors that say where, and real short runs (sine, airline, 2-process DDP)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_train.tasks import forecast_baselines as B
from lstm_train.config import ConfigError, load_job, validate_job
from lstm_train.data.series import csvfile, sources
from lstm_train.data.series import windows as W
from lstm_train.models.forecaster import LSTMForecaster
from lstm_train.tasks.base import Splits
from lstm_train.tasks.forecast import ForecastTask

from .conftest import ROOT, accelerate_cli, result_of, run_cli

AIRLINE_JOB = str(ROOT / "jobs" / "airline_forecast.yaml")
SINE_JOB = str(ROOT / "jobs" / "sine_forecast.yaml")


def job_for(data: dict, model: dict | None = None):
    return validate_job({"name": "t", "task": "forecast", "data": data, "model": model or {}}, "test")


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def monthly_csv(path: Path, values, start: str = "2000-01-01") -> Path:
    import pandas as pd

    months = pd.date_range(start, periods=len(values), freq="MS")
    return write_csv(path, "month,sales", [f"{m:%Y-%m},{v}" for m, v in zip(months, values)])


# ---------------------------------------------------------------- windows and splits


def test_windows_and_split_boundaries() -> None:
    spans = W.split_spans(50, window=5, horizon=3, val_size=6, test_size=8, name="s")
    assert (spans.n_train, spans.n_val, spans.n_test) == (36, 6, 8)
    z = np.arange(50.0)[:, None]
    for split, first, last in (("train", 5, 33), ("val", 36, 39), ("test", 42, 47)):
        at = W.origins(spans, 5, 3, split)
        assert (at[0], at[-1]) == (first, last) and np.all(np.diff(at) == 1)
        x, y = W.make_windows(z, at, 5, 3)
        assert x.shape == (len(at), 5, 1) and y.shape == (len(at), 3)
        np.testing.assert_array_equal(x[:, :, 0], at[:, None] - 5 + np.arange(5))  # z[t-5:t]
        np.testing.assert_array_equal(y, at[:, None] + np.arange(3))  # z[t:t+3]
    train_x, train_y = W.make_windows(z, W.origins(spans, 5, 3, "train"), 5, 3)
    assert max(train_x.max(), train_y.max()) == spans.n_train - 1  # the whole train span, nothing after
    test_y = W.make_windows(z, W.origins(spans, 5, 3, "test"), 5, 3)[1]
    assert test_y.min() == spans.test_start and test_y.max() == 49  # targets cover exactly the test span
    strided = W.origins(spans, 5, 3, "train", stride=4)
    assert strided[-1] == 33 and np.all(np.diff(strided) == 4)  # the newest window is always kept


def test_no_test_value_in_any_training_window(tmp_path: Path) -> None:
    # Values 1..120: every value is its own label, so leakage would show as a value.
    csv = monthly_csv(tmp_path / "s.csv", range(1, 121))
    task = ForecastTask(job_for({"source": "csv", "path": str(csv), "time_column": "month", "window": 12,
                                 "val_size": 12, "test_size": 24, "scale": "none"}, {"horizon": 6}))
    splits = task.load_data()
    x, y = splits.train
    assert float(torch.cat([x.flatten(), y.flatten()]).max()) == 120 - 24 - 12  # train span ends at 84
    vx, vy, _, _ = splits.val
    assert float(vy.min()) == 85 and float(vy.max()) == 96 and float(vx.max()) <= 90
    tx, ty, truth, denom = splits.test
    assert float(ty.min()) == 97 and float(ty.max()) == 120 and len(ty) == 24 - 6 + 1
    torch.testing.assert_close(truth, ty.double().float())
    assert torch.all(denom == 12.0)  # MASE scale: train seasonal (12) differences of 1..84 are all 12


def test_scaling_uses_train_statistics_only(tmp_path: Path) -> None:
    values = np.linspace(10, 30, 100) + np.sin(np.arange(100))
    spec = {"source": "csv", "path": "", "window": 10, "test_size": 20, "val_size": 10, "transform": "log"}
    infos, trains = [], []
    for i, tail in enumerate((1.0, 100.0)):  # blow the val+test spans up by 100x
        v = values.copy()
        v[70:] *= tail
        csv = write_csv(tmp_path / f"s{i}.csv", "y", [repr(float(a)) for a in v])
        splits = ForecastTask(job_for({**spec, "path": str(csv)}, {"horizon": 5})).load_data()
        infos.append(splits.info)
        trains.append(splits.train)
    assert infos[0]["scaler"] == infos[1]["scaler"] and infos[0]["mase_scale"] == infos[1]["mase_scale"]
    for a, b in zip(*trains):
        torch.testing.assert_close(a, b)
    logs = np.log(values[:70])
    assert infos[0]["scaler"]["shift"][0] == pytest.approx(logs.mean())
    assert infos[0]["scaler"]["scale"][0] == pytest.approx(logs.std())
    x = trains[0][0][:, :, 0].numpy()
    assert abs(x.mean()) < 0.2 and 0.8 < x.std() < 1.2


# ------------------------------------------------------------------------ baselines


def test_baselines_by_hand() -> None:
    y = np.array([10, 20, 12, 22, 14, 24, 16, 26], dtype=float)  # season 2, +2 per season
    spans = W.Spans(4, 0, 4)
    at = W.origins(spans, window=2, horizon=2, split="test")
    np.testing.assert_array_equal(at, [4, 5, 6])
    truth = y[at[:, None] + np.arange(2)]
    naive = B.naive(y, at, 2)
    snaive = B.seasonal_naive(y, at, 2, season_length=2)
    np.testing.assert_array_equal(naive, [[22, 22], [14, 14], [24, 24]])
    np.testing.assert_array_equal(snaive, [[12, 22], [22, 14], [14, 24]])
    scale = W.mase_scale(y[:4], 2)  # |12-10|, |22-20|
    assert scale == 2.0
    s = B.scores(truth, snaive, scale)
    assert (s["mae"], s["rmse"], s["mase"]) == (2.0, 2.0, 1.0)
    smape = 100 * np.mean([4 / 26, 4 / 46, 4 / 46, 4 / 30, 4 / 30, 4 / 50])
    assert s["smape"] == pytest.approx(smape)
    n = B.scores(truth, naive, scale)  # errors 8 2 10 2 8 2
    assert n["mae"] == pytest.approx(32 / 6) and n["rmse"] == pytest.approx(math.sqrt(40))
    assert n["mase"] == pytest.approx(32 / 12)
    # Horizon longer than the season: whole seasons back, never a future value.
    np.testing.assert_array_equal(B.seasonal_naive(y, np.array([4]), 4, 2), [[12, 22, 12, 22]])
    assert W.mase_scale(np.array([1.0, 3.0, 2.0]), 12) == 1.5  # season >= train length: lag 1
    assert B.scores([0.0], [0.0], 1.0)["smape"] == 0.0


def test_classical_models_forecast_what_they_can_represent() -> None:
    z = np.empty(60)
    z[0] = 0.0
    for t in range(1, 60):
        z[t] = 0.5 * z[t - 1] + 1.0  # AR(1) converging to 2
    at = np.array([45, 50])
    np.testing.assert_allclose(B.ar(z, 40, at, 3, order=1), z[at[:, None] + np.arange(3)], atol=1e-9)
    t = np.arange(96.0)
    season = np.tile([0.0, 3.0, 1.0, -4.0], 24)
    y = 50 + 0.5 * t + season  # trend + exact season: SARIMA(0,1,1)(0,1,1) and ETS get it near-exactly
    at = np.array([80, 88])
    truth = y[at[:, None] + np.arange(8)]
    for method in ("sarima", "ets"):
        pred = B.classical(method, y, 72, at, 8, 4, 4)
        assert np.abs(pred - truth).max() < 0.5, method
    assert B.classical_method("auto", 12, 1) == "sarima" and B.classical_method("auto", 126, 100) == "ar"


def test_forecaster_residual_starts_at_the_simple_forecast() -> None:
    x = torch.arange(2 * 24, dtype=torch.float32).reshape(2, 24, 1)
    seasonal = LSTMForecaster(1, 8, 2, horizon=14, window=24, bidirectional=True, residual="seasonal",
                              season_length=12, relative_inputs=True)
    out = seasonal(x)
    assert out.shape == (2, 14)
    # Targets t..t+13 from a window ending at t-1: values 12..23 of the window, then 12..13 again.
    torch.testing.assert_close(out[0], x[0, [*range(12, 24), 12, 13], 0])
    last = LSTMForecaster(1, 8, 1, horizon=3, window=24, residual="last")
    torch.testing.assert_close(last(x), x[:, -1:, 0].expand(-1, 3))
    plain = LSTMForecaster(3, 8, 1, horizon=5, window=7)
    assert plain(torch.randn(4, 7, 3)).shape == (4, 5)
    with pytest.raises(ValueError, match="window"):
        LSTMForecaster(1, 8, 1, horizon=3, window=6, residual="seasonal", season_length=12)


def test_covariates_are_encoder_inputs_scaled_on_train(tmp_path: Path) -> None:
    rows = [f"2001-{1 + i // 28:02d}-{1 + i % 28:02d},{10 + i % 7},{100 + 2 * i}" for i in range(84)]
    csv = write_csv(tmp_path / "daily.csv", "day,sales,price", rows)
    job = job_for({"source": "csv", "path": str(csv), "time_column": "day", "column": "sales",
                   "covariates": ["price"], "window": 14, "test_size": 14, "fill": "interpolate"},
                  {"horizon": 7, "num_layers": 2, "bidirectional": True})
    task = ForecastTask(job)
    splits = task.load_data()
    assert splits.info["input_size"] == 2 and splits.info["covariates"] == ["price"]
    assert splits.info["season_length"] == 7  # daily dates: weekly season unless data.season_length says
    x = splits.train[0]
    assert x.shape[1:] == (14, 2)
    prices = x[:, :, 1]
    assert abs(float(prices.mean())) < 0.3 and abs(float(prices.std()) - 1) < 0.3  # scaled with train stats
    model = task.build_model(splits.info)
    loss = task.loss(model, splits.train, splits.info)
    loss.backward()
    with torch.no_grad():
        sums = task.eval_sums(model.eval(), splits.test, splits.info)
    metrics = task.metrics({k: float(v) for k, v in sums.items()}, splits.info)
    assert metrics["test_windows"] == 14 - 7 + 1 and math.isfinite(metrics["test_mase"])
    lines = task.predict(model, splits.info, [], {"csv": str(csv)})
    assert len(lines) == 7 and lines[0].split("\t")[0] == "2001-03-29"  # Jan 29-31 were interpolated onto the day grid
    with pytest.raises(ValueError, match="covariates"):
        task.predict(model, splits.info, [str(v) for v in range(20)], {})


def test_finish_and_predict_need_only_the_splits(tmp_path: Path) -> None:
    # A fresh task given the splits (info through JSON, as a checkpoint keeps it) and the
    # data file gone: finish and predict may use nothing that load_data left behind.
    months = np.arange(72)
    csv = monthly_csv(tmp_path / "s.csv", [f"{100 + 2 * t + 10 * math.sin(t * math.pi / 6):.3f}" for t in months])
    job = job_for({"source": "csv", "path": str(csv), "time_column": "month", "window": 12, "val_size": 12,
                   "test_size": 12, "classical": "ar", "plot_series": 1}, {"horizon": 6, "residual": "seasonal"})
    splits = ForecastTask(job).load_data()
    info = json.loads(json.dumps(splits.info))
    assert info == splits.info
    csv.unlink()
    task = ForecastTask(job)
    model = task.build_model(info).eval()
    out = task.finish(model, Splits(splits.train, splits.test, splits.val, info), tmp_path)
    assert out["test_origins"] == 12 - 6 + 1 and set(out["baselines"]) == {"naive", "seasonal_naive", "ar"}
    # The untrained seasonal residual model is the seasonal naive forecast, scored the same way.
    assert out["lstm"]["mase"] == pytest.approx(out["baselines"]["seasonal_naive"]["mase"], rel=1e-5)
    with torch.no_grad():
        sums = task.eval_sums(model, splits.test, info)
    metrics = task.metrics({k: float(v) for k, v in sums.items()}, info)
    assert metrics[f"test_{ForecastTask.primary_metric}"] == pytest.approx(out["lstm"]["mase"], rel=1e-5)
    assert ForecastTask.higher_is_better is False
    assert (tmp_path / "forecast.png").stat().st_size > 10_000
    lines = task.predict(model, info, [], {})
    assert [line.split("\t")[0] for line in lines] == [f"2006-{m:02d}-01" for m in range(1, 7)]
    last_year = info["series"]["values"][0][-12:-6]
    np.testing.assert_allclose([float(line.split("\t")[1]) for line in lines], last_year, rtol=1e-5)


def test_csv_reading_steps(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "x.csv"
    axis = csvfile.time_axis(pd.Series(["2000-01-01", "2000-02-01 ", "2000-04-01", "2000-05-01"]), path, "month",
                             "interpolate")
    assert axis.freq == "MS" and axis.rows.tolist() == [0, 1, 3, 4]
    assert axis.labels[2] == "2000-03-01 (no row)" and axis.labels[3] == "line 4 (2000-04-01)"
    np.testing.assert_array_equal(axis.place(np.array([1.0, 2.0, 4.0, 5.0])), [1, 2, np.nan, 4, 5])
    with pytest.raises(ConfigError, match=r"x.csv: time column 'month' has 1 gap\(s\) in its MS steps"):
        csvfile.time_axis(pd.Series(["2000-01-01", "2000-02-01", "2000-04-01", "2000-05-01"]), path, "month", "error")
    holes = np.array([np.nan, 1.0, np.nan, 3.0])
    np.testing.assert_array_equal(csvfile.fill_missing(holes, "ffill", "w", []), [1, 1, 1, 3])
    np.testing.assert_array_equal(csvfile.fill_missing(holes, "interpolate", "w", []), [1, 1, 2, 3])
    assert np.isnan(csvfile.parse_numbers(["1", " NA", "?"], path, "v")[1:]).all()
    # predict's CSV: the run's own names when there, else the only value column and a date-like one.
    write_csv(path, "Date,Value", ["2001-01-01,5", "2001-02-01,6", "2001-03-01,7"])
    s = csvfile.read_for_predict(path, "sales", "month", [], "error")
    assert s.values.tolist() == [5, 6, 7] and s.freq == "MS" and s.name == "x.csv:Value"
    with pytest.raises(ConfigError, match=r"--csv '.*nope.csv': file not found"):
        csvfile.read_for_predict(tmp_path / "nope.csv", "sales", None, [], "error")


# ------------------------------------------------------------------------ bad input


def load(tmp_path: Path, **data):
    model = data.pop("model", {"horizon": 3})
    return ForecastTask(job_for({"source": "csv", "window": 4, "test_size": 3, **data}, model)).load_data()


def test_csv_errors_say_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.path = '.*nope.csv': file not found"):
        load(tmp_path, path=str(tmp_path / "nope.csv"))

    csv = write_csv(tmp_path / "a.csv", "date,sales,price", [f"2000-01-{d:02d},{d},{d * 2}" for d in range(1, 21)])
    with pytest.raises(ConfigError, match=r"data.column = 'salse' is not a column; the columns are: 'date', 'sales', 'price'"):
        load(tmp_path, path=str(csv), column="salse")
    with pytest.raises(ConfigError, match=r"set data.column .* the columns are: 'date', 'sales', 'price'"):
        load(tmp_path, path=str(csv), time_column="date")
    with pytest.raises(ConfigError, match=r"data.covariates = 'cost' is not a column"):
        load(tmp_path, path=str(csv), column="sales", covariates=["cost"])

    rows = [f"2000-01-{d:02d},{d}" for d in range(1, 21)]
    rows[6] = "2000-01-07,12O"
    bad = write_csv(tmp_path / "b.csv", "date,sales", rows)
    with pytest.raises(ConfigError, match=r"b.csv: line 8 \(data row 7\): column 'sales' has '12O', which is not a number"):
        load(tmp_path, path=str(bad), column="sales", time_column="date")

    rows = [f"2000-01-{d:02d},{d}" for d in range(1, 21)]
    rows[3] = "2000-01-04,"
    rows[9] = "2000-01-10,NA"
    holes = write_csv(tmp_path / "c.csv", "date,sales", rows)
    with pytest.raises(ConfigError, match=r"'sales': 2 missing value\(s\) at line 5 \(2000-01-04\), line 11 \(2000-01-10\).*data.fill"):
        load(tmp_path, path=str(holes), time_column="date")
    filled = load(tmp_path, path=str(holes), time_column="date", fill="interpolate", scale="none")
    assert len(filled.train[0]) > 0 and not torch.isnan(filled.train[0]).any()

    rows = [f"2000-{m:02d}-01,{m}" for m in range(1, 13) if m not in (5, 6)]
    gaps = write_csv(tmp_path / "d.csv", "month,sales", rows)
    with pytest.raises(ConfigError, match=r"2 gap\(s\) in its MS steps \(missing: 2000-05-01, 2000-06-01\)"):
        load(tmp_path, path=str(gaps), time_column="month")
    filled = load(tmp_path, path=str(gaps), time_column="month", fill="interpolate", scale="none", test_size=4)
    np.testing.assert_array_equal(filled.test[2][-1].numpy(), [10.0, 11.0, 12.0])  # 12 months, regular again
    assert filled.info["freq"] == "MS"

    back = write_csv(tmp_path / "e.csv", "month,sales", ["2000-01-01,1", "2000-03-01,2", "2000-02-01,3"])
    with pytest.raises(ConfigError, match=r"line 4: time column 'month' goes back"):
        load(tmp_path, path=str(back), time_column="month")
    dates = write_csv(tmp_path / "f.csv", "month,sales", ["2000-01-01,1", "someday,2"])
    with pytest.raises(ConfigError, match=r"line 3 .*'someday', which is not a date"):
        load(tmp_path, path=str(dates), time_column="month")

    short = write_csv(tmp_path / "g.csv", "sales", [str(v) for v in range(12)])
    with pytest.raises(ConfigError, match=r"too short: 12 points, but window 4 \+ horizon 3 = 7 .* val 0 \+ test 6.* at least 13"):
        load(tmp_path, path=str(short), test_size=6)
    with pytest.raises(ConfigError, match=r"test span \(2 points\) is shorter than the horizon \(3\)"):
        load(tmp_path, path=str(short), test_size=2)
    neg = write_csv(tmp_path / "h.csv", "sales", [str(v) for v in range(-2, 30)])
    with pytest.raises(ConfigError, match="'log' needs positive values; point 0 is -2"):
        load(tmp_path, path=str(neg), transform="log")
    empty = tmp_path / "i.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load(tmp_path, path=str(empty))


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'data.windw'.*Did you mean 'data.window'"):
        job_for({"source": "airline", "windw": 3})
    with pytest.raises(ConfigError, match="data.path = None: data.source = 'csv' needs data.path"):
        job_for({"source": "csv"})
    with pytest.raises(ConfigError, match=r"data.path = 'x.csv': only used with data.source = 'csv' \(source is 'airline'\)"):
        job_for({"source": "airline", "path": "x.csv"})
    with pytest.raises(ConfigError, match=r"model.relative_inputs = True: needs model.residual = 'last' or 'seasonal'"):
        job_for({}, {"relative_inputs": True})
    with pytest.raises(ConfigError, match="needs data.window >= the season length 12"):
        ForecastTask(job_for({"source": "airline", "window": 6}, {"residual": "seasonal"})).load_data()
    for path in (AIRLINE_JOB, SINE_JOB):
        assert load_job(path).task == "forecast"


def test_builtin_series_load_offline() -> None:
    air, co2, spots = sources.airline(), sources.co2(), sources.sunspots()
    assert len(air) == 144 and air.values[0] == 112 and air.values[-1] == 432
    assert str(air.times[0].date()) == "1949-01-01" and air.freq == "MS"
    assert len(co2) > 500 and not np.isnan(co2.values).any() and 310 < co2.values[0] < 320
    assert len(spots) == 309 and spots.values[0] == 5
    sines = sources.sine_series()
    assert len(sines) == 100 and len(sines[0]) == 1000 and sources.sine_season_length(20) == 126


# ------------------------------------------------------------------------- real runs


def test_sine_short_run_writes_result_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "sine"
    proc = run_cli("run", SINE_JOB, f"train.output_dir={out}", "data.sine.series=6", "data.sine.length=400",
                   "data.val_size=50", "data.test_size=50", "data.stride=1", "train.max_steps=40", "train.epochs=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = result_of(out)
    assert r["steps"] == 40 and r["test_windows"] == 6 * (50 - 20 + 1)
    assert r["mixed_precision"] == "no"  # precision auto: forecasting measured worse in bf16 (ForecastTask)
    assert r["classical_model"] == "ar" and set(r["baselines"]) == {"naive", "seasonal_naive", "ar"}
    assert r["test_mse"] < 1.0 and math.isfinite(r["test_mase"])
    assert r["lstm"]["mase"] == pytest.approx(r["test_mase"], rel=1e-4)  # sharded sums == one pass
    assert 0.5 < r["baselines"]["seasonal_naive"]["mase"] < 1.5  # one wavelength back: the in-sample scale
    png = Path(r["forecast_plot"])
    assert png.parent == out and png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "LSTM" in (out / "forecast_table.txt").read_text()


def test_airline_run_beats_seasonal_naive_and_predicts(tmp_path: Path) -> None:
    out = tmp_path / "air"
    proc = run_cli("run", AIRLINE_JOB, f"train.output_dir={out}", "train.epochs=15", "train.eval_every_epochs=15")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = result_of(out)
    assert r["test_windows"] == 13 and r["classical_model"] == "sarima"
    b = r["baselines"]
    assert b["seasonal_naive"]["mase"] == pytest.approx(1.683, abs=1e-3)  # 1959-60 vs 1949-57 seasonal MAE
    assert r["val_windows"] == 1 and r["best_step"] is not None  # 1958 picks the weights tested
    assert b["naive"]["mase"] > b["seasonal_naive"]["mase"] > 1.0 > b["sarima"]["mase"]
    assert r["test_mase"] < 0.8 * b["seasonal_naive"]["mase"]
    assert r["lstm"]["mase"] == pytest.approx(r["test_mase"], rel=1e-4)
    assert Path(r["forecast_plot"]).stat().st_size > 10_000

    air = sources.airline()
    csv = write_csv(tmp_path / "air.csv", "Month,Passengers",
                    [f"{t:%Y-%m},{v:g}" for t, v in zip(air.times, air.values)])
    proc = run_cli("predict", str(out), "--csv", str(csv))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert [d for d, _ in lines] == [f"1961-{m:02d}-01" for m in range(1, 13)]
    values = [float(v) for _, v in lines]
    assert 380 < min(values) and max(values) < 800 and values[6] > values[10]  # summer peak, autumn low

    # In-process: with no input the run continues its own series, i.e. the same forecast.
    from lstm_train.cli import load_run

    _, task, model, info = load_run(out)
    assert [line.split("\t") for line in task.predict(model, info, [], {})] == lines

    proc = run_cli("predict", str(out), "--csv", str(write_csv(tmp_path / "short.csv", "Passengers", ["1", "2"])))
    assert proc.returncode == 2 and "2 values, but the model reads windows of 24" in proc.stderr


def test_two_process_cpu_run_gives_one_result(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = accelerate_cli(2, "run", AIRLINE_JOB, f"train.output_dir={out}", "train.epochs=3",
                          "train.eval_every_epochs=3", "data.classical=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = result_of(out)
    assert r["world_size"] == 2 and r["test_windows"] == 13  # every test window once, across both ranks
    assert len(set(r["weights_sha1_per_rank"])) == 1
    assert r["lstm"]["mase"] == pytest.approx(r["test_mase"], rel=1e-4)
    assert set(r["baselines"]) == {"naive", "seasonal_naive"}
    assert list(out.glob("result*.json")) == [out / "result.json"]
