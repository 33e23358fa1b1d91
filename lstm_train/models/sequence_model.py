"""The `sequence` task's model: numeric features per step -> an LSTM -> one vector -> classes or a value.

    x [B, T, F] (padded), lengths [B] -> PaddedLSTM -> [B, T, H*dirs] -> pool -> dropout -> linear [B, outputs]

Padding never changes a result (`PaddedLSTM`; pooling reads real steps only), so a batch of
sequences of many lengths gives each the output it gets alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .sequence import PaddedLSTM, pool


class SequenceModel(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int, outputs: int, bidirectional: bool = False,
                 dropout: float = 0.0, pooling: str = "last", head_dropout: float = 0.0) -> None:
        super().__init__()
        self.pooling = pooling
        self.lstm = PaddedLSTM(input_size, hidden_size, num_layers, bidirectional, dropout)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.lstm.out_features, outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """float32 [B, outputs]: logits, or the (normalised) value in column 0."""
        outputs, final = self.lstm(x, lengths)
        return self.head(self.dropout(pool(outputs, final, lengths, self.pooling))).float()
