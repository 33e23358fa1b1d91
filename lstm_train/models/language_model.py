"""The char-rnn / AWD-LSTM language model: embedding, a stack of LSTMs, a softmax over the vocabulary.

Every layer is one `nn.LSTM` call, so it runs on the fused kernels (oneDNN on CPU, cuDNN
on GPU), and each of AWD-LSTM's regularisers (Merity et al. 2017) is kept outside them:

    weight drop       DropConnect on each layer's hidden-to-hidden weight: the dropped
                      weight is handed to the fused call through `torch.func.functional_call`
                      (nn.LSTM rebuilds its flat weight list on assignment), never a Python cell
    locked dropout    one dropout mask per sequence, the same at every time step
                      (variational dropout), on the embedding, between layers and on the output
    embedding dropout whole rows of the embedding matrix (word types) dropped
    AR / TAR          returned as the last layer's (dropped / raw) outputs for the task's loss

The hidden state goes in and comes out, so a caller can carry it from one window to the next.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

State = list[tuple[torch.Tensor, torch.Tensor]]  # (h, c) per layer, each [1, B, hidden]


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout with one mask per sequence, shared by every step of x [B, T, F]."""
    if not training or p == 0:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedding_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """The embedding matrix with whole rows (tokens of the vocabulary) dropped."""
    if not training or p == 0:
        return weight
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
    return weight * mask


class LanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int,
                 dropout: float = 0.0, tie_weights: bool = False, weight_drop: float = 0.0,
                 locked: bool = False, input_dropout: float | None = None, embed_dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        sizes = [embedding_size] + [hidden_size] * (num_layers - 1) + [embedding_size if tie_weights else hidden_size]
        self.layers = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(num_layers))
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        if tie_weights:  # Press & Wolf 2017; Inan et al. 2017: the last layer is as wide as the embedding
            self.decoder.weight = self.embedding.weight
        self.dropout, self.weight_drop, self.locked = dropout, weight_drop, locked
        self.input_dropout = dropout if input_dropout is None else input_dropout
        self.embed_dropout = embed_dropout

    def _drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        return locked_dropout(x, p, self.training) if self.locked else F.dropout(x, p, self.training)

    def _layer(self, lstm: nn.LSTM, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        if self.training and self.weight_drop > 0:
            dropped = {"weight_hh_l0": F.dropout(lstm.weight_hh_l0, self.weight_drop, True)}
            return functional_call(lstm, dropped, (x, state) if state is not None else (x,))
        return lstm(x, state) if state is not None else lstm(x)

    def forward(self, tokens: torch.Tensor, state: State | None = None, outputs: bool = False):
        """Logits [B, T, V] and the new state; with `outputs` also the last layer's output
        (dropped, raw) for AR/TAR."""
        weight = embedding_dropout(self.embedding.weight, self.embed_dropout, self.training)
        x = self._drop(F.embedding(tokens, weight), self.input_dropout)
        new: State = []
        raw = x
        for i, lstm in enumerate(self.layers):
            raw, (h, c) = self._layer(lstm, x, state[i] if state is not None else None)
            new.append((h, c))
            x = self._drop(raw, self.dropout)
        logits = self.decoder(x)
        return (logits, new, x, raw) if outputs else (logits, new)
