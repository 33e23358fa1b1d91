"""The LSTM cell exactly as the tutorial writes it, six equations, no fusion.

    f_t = σ(W_f·[h_{t-1}, x_t] + b_f)          forget gate       (1)
    i_t = σ(W_i·[h_{t-1}, x_t] + b_i)          input gate        (2)
    C~_t = tanh(W_c·[h_{t-1}, x_t] + b_c)      candidate         (3)
    C_t = f_t * C_{t-1} + i_t * C~_t           new cell state    (4)
    o_t = σ(W_o·[h_{t-1}, x_t] + b_o)          output gate       (5)
    h_t = o_t * tanh(C_t)                      new hidden state  (6)

It is slow on purpose and a test's oracle only: tests/test_models.py proves with it that
`nn.LSTM`, which the training code runs, computes this math.  The parameters
are laid out like `nn.LSTM`'s (`weight_ih` = [W_i; W_f; W_c; W_o] acting on x,
`weight_hh` acting on h, two biases), so weights copy over one to one:
W_f·[h, x] is split as W_f^x·x + W_f^h·h, and b_f = b_ih_f + b_hh_f.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ReferenceLSTMCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def gate(self, k: int, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """W_k·[h, x] + b_k for gate block k (0=i, 1=f, 2=c, 3=o, nn.LSTM's order)."""
        rows = slice(k * self.hidden_size, (k + 1) * self.hidden_size)
        return (
            x @ self.weight_ih[rows].T
            + h @ self.weight_hh[rows].T
            + self.bias_ih[rows]
            + self.bias_hh[rows]
        )

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        f = torch.sigmoid(self.gate(1, h, x))  # (1)
        i = torch.sigmoid(self.gate(0, h, x))  # (2)
        c_tilde = torch.tanh(self.gate(2, h, x))  # (3)
        c = f * c + i * c_tilde  # (4)
        o = torch.sigmoid(self.gate(3, h, x))  # (5)
        h = o * torch.tanh(c)  # (6)
        return h, c


class ReferenceLSTM(nn.Module):
    """A one-layer, batch-first, unidirectional LSTM unrolled over time with the cell above."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.cell = ReferenceLSTMCell(input_size, hidden_size)

    @torch.no_grad()
    def copy_from(self, lstm: nn.LSTM) -> ReferenceLSTM:
        """Take the weights of layer 0 of an `nn.LSTM`."""
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(self.cell, name).copy_(getattr(lstm, f"{name}_l0"))
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch = x.shape[0]
        h = x.new_zeros(batch, self.cell.hidden_size)
        c = x.new_zeros(batch, self.cell.hidden_size)
        outputs = []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h[None], c[None])
