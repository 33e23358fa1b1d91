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

The output layer is a full softmax (`decoder`, optionally tied to the embedding) or, with
`cutoffs`, torch's adaptive softmax (Grave et al. 2017, `nn.AdaptiveLogSoftmaxWithLoss`):
the most frequent ids in a head, rarer ones in clusters behind smaller projections, so a
large word vocabulary costs a fraction of a full softmax per token.  Ids must be in frequency
order (the words vocabulary is, see `data/streams/language_model.py`).  Given `targets`, `forward` returns
each target's exact log-probability (what training and evaluation need, without the [B, T, V]
logits); without them it returns log-probabilities over the whole vocabulary (`log_prob`),
which sample and score like logits.

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


def _fp32(x: torch.Tensor) -> torch.autocast:
    """The adaptive softmax in float32, autocast or not: its log-softmaxes would stay bf16 under CPU
    autocast (and its forward then fails, copying them into a float32 output), and a bf16
    log-probability is only good to ~0.03 nats; the full softmax's loss is float32 too."""
    return torch.autocast(x.device.type, enabled=False)


class LanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int,
                 dropout: float = 0.0, tie_weights: bool = False, weight_drop: float = 0.0,
                 locked: bool = False, input_dropout: float | None = None, embed_dropout: float = 0.0,
                 cutoffs: list[int] | None = None) -> None:
        super().__init__()
        if cutoffs and tie_weights:
            raise ValueError("tie_weights cannot go with an adaptive softmax (its clusters have no row per word)")
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        sizes = [embedding_size] + [hidden_size] * (num_layers - 1) + [embedding_size if tie_weights else hidden_size]
        self.layers = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(num_layers))
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(sizes[-1], vocab_size, cutoffs) if cutoffs else None
        if self.adaptive is None:
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

    def forward(self, tokens: torch.Tensor, state: State | None = None, outputs: bool = False,
                targets: torch.Tensor | None = None):
        """Logits [B, T, V] (adaptive: log-probabilities) and the new state; with `outputs` also the
        last layer's output (dropped, raw) for AR/TAR.  With `targets` [B, T] (adaptive softmax
        only) the first result is instead each target's log-probability, float32 [B * T]."""
        weight = embedding_dropout(self.embedding.weight, self.embed_dropout, self.training)
        x = self._drop(F.embedding(tokens, weight), self.input_dropout)
        new: State = []
        raw = x
        for i, lstm in enumerate(self.layers):
            raw, (h, c) = self._layer(lstm, x, state[i] if state is not None else None)
            new.append((h, c))
            x = self._drop(raw, self.dropout)
        if targets is not None:
            first = self._target_log_probs(x, targets)
        elif self.adaptive is not None:
            with _fp32(x):
                first = self.adaptive.log_prob(x.flatten(0, 1).float()).unflatten(0, x.shape[:2])
        else:
            first = self.decoder(x)
        return (first, new, x, raw) if outputs else (first, new)

    def _target_log_probs(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) per position (float32 [B * T]), exact: the head's log-softmax plus, for a
        word in a cluster, the cluster's.  While training, every cluster's weights also enter with
        weight 0: a cluster no target of the batch fell in then has a (zero) gradient like every
        other parameter, so DDP, which expects one for each, reduces the same tensors on every
        rank, and the optimizer sees the same parameters at 1 process or N."""
        if self.adaptive is None:
            raise ValueError("targets are for the adaptive softmax; a full softmax's logits go to cross_entropy")
        with _fp32(x):
            log_probs = self.adaptive(x.flatten(0, 1).float(), targets.flatten()).output
        if torch.is_grad_enabled():
            log_probs = log_probs + sum(w.view(-1)[0] for w in self.adaptive.tail.parameters()) * 0.0
        return log_probs
