"""LSTM forecaster: encode a window of past values, predict the next `horizon` at once.

Direct multi-step: the encoder's final hidden state goes through one linear
layer to `horizon` outputs (no feeding predictions back in).  Two options make
small data sets (144 monthly airline passengers) learnable by a small network:

* `residual`: the network predicts a correction to a simple forecast made from
  the window itself: `last` (naive: the last value) or `seasonal` (seasonal
  naive: the value one season before each target).  Zero output = that forecast.
* `relative_inputs`: the target channel is fed relative to the window's last
  value, so the network sees shapes, not levels (a trending series' test span
  lies above anything seen in training).  Needs a residual, which adds the
  level back.

Inputs are [batch, window, features] in scaled units, feature 0 the target;
outputs [batch, horizon] in the same scaled units (what the loss compares).
`to_original` undoes the target's scaling (and log transform) with the
statistics the model was built with, so evaluation and `predict` report errors
and forecasts in the series' own units from the model alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .classifier import LSTMEncoder


class LSTMForecaster(nn.Module):
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        horizon: int,
        window: int,
        bidirectional: bool = False,
        dropout: float = 0.0,
        residual: str = "none",
        season_length: int = 1,
        relative_inputs: bool = False,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
        log_target: bool = False,
    ) -> None:
        super().__init__()
        if residual not in ("none", "last", "seasonal"):
            raise ValueError(f"residual must be none, last or seasonal, not {residual!r}")
        if residual == "seasonal" and window < season_length:
            raise ValueError(f"a seasonal residual needs window ({window}) >= season length ({season_length})")
        if relative_inputs and residual == "none":
            raise ValueError("relative inputs need a residual (last or seasonal) to restore the level")
        self.horizon, self.window, self.residual, self.relative_inputs = horizon, window, residual, relative_inputs
        self.target_shift, self.target_scale, self.log_target = float(target_shift), float(target_scale), log_target
        self.encoder = LSTMEncoder(input_size, hidden_size, num_layers, bidirectional, dropout)
        self.head = nn.Linear(self.encoder.out_features, horizon)
        if residual != "none":  # start exactly at the simple forecast
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        # Window positions of the seasonal naive value for each target k (see baselines.seasonal_naive).
        m = max(1, season_length)
        k = torch.arange(horizon)
        self.register_buffer("season_index", window + k - m * (k // m + 1), persistent=False)

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """The simple forecast the network corrects: [batch, horizon] (zeros for residual none)."""
        target = x[..., 0]
        if self.residual == "last":
            return target[:, -1:].expand(-1, self.horizon)
        if self.residual == "seasonal":
            return target[:, self.season_index]
        return torch.zeros(x.shape[0], self.horizon, dtype=x.dtype, device=x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.window:
            raise ValueError(f"expected windows of {self.window} steps, got {x.shape[1]}")
        inputs = x
        if self.relative_inputs:
            level = x[:, -1:, :1]
            inputs = torch.cat([x[..., :1] - level, x[..., 1:]], dim=-1)
        return self.base(x) + self.head(self.encoder(inputs))

    def to_original(self, z: torch.Tensor) -> torch.Tensor:
        """Outputs in scaled units -> the series' original units (compute in float64)."""
        z = z * self.target_scale + self.target_shift
        return z.exp() if self.log_target else z
