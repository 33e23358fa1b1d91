"""The tutorial's `simpleLSTM`, generalised: layers, bidirectional, dropout."""

from __future__ import annotations

import torch
from torch import nn


class LSTMEncoder(nn.Module):
    """Read a sequence with `nn.LSTM`; summarise it by the last layer's final hidden state.

    One direction: `h_n[-1]` (== `out[:, -1]`, the tutorial's "last step").
    Bidirectional: the forward direction's last step and the backward direction's
    first, concatenated, so both ends of the sequence reach the head directly.
    The hidden state starts at zero by passing no state (nothing allocated per step).
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.out_features = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x)
        last = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.lstm.bidirectional else h_n[-1]
        return self.dropout(last)


class LSTMClassifier(nn.Module):
    """Read a sequence (an image row by row), classify from the last hidden state.

    With one unidirectional layer this is exactly the tutorial's model:
    `nn.LSTM(28, 64, 1, batch_first=True)` + `nn.Linear(64, 10)` on the last step.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        num_classes: int,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = LSTMEncoder(input_size, hidden_size, num_layers, bidirectional, dropout)
        self.fc = nn.Linear(self.encoder.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))
