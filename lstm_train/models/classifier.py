"""The tutorial's `simpleLSTM`, generalised: layers, bidirectional, dropout."""

from __future__ import annotations

import torch
from torch import nn


class LSTMClassifier(nn.Module):
    """Read a sequence (an image row by row), classify from the last hidden state.

    With one unidirectional layer this is exactly the tutorial's model:
    `nn.LSTM(28, 64, 1, batch_first=True)` + `nn.Linear(64, 10)` on the last step.
    Hidden state starts at zero by passing no state (no tensors allocated per step).
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
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x)
        # h_n[-1] is the last layer's final state (== out[:, -1] one-directional);
        # bidirectional: the forward direction's last step and the backward's first.
        last = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.lstm.bidirectional else h_n[-1]
        return self.fc(self.dropout(last))
