"""Time splits, the target transform, scaling fitted on the train span, and windows.

Every series is cut by time into train / val / test spans at the same positions
from its end:

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

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import SeriesError


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

    def to_info(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    @classmethod
    def from_info(cls, spans: dict[str, int]) -> Spans:
        return cls(spans["train"], spans["val"], spans["test"])


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
