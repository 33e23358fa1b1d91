"""A BiLSTM sequence tagger with word and character features (Plank et al. 2016; Lample et al. 2016).

    word ids [B, T]    -> word embedding (lower-cased vocabulary)  \
    char ids [B, T, W] -> char CNN or BiLSTM over each word (cased) -> concat -> BiLSTM -> scores [B, T, K]

The character encoder gives every word, including one never seen in training, a
representation from its spelling (suffixes, capitals, digits, hyphens): that is
what carries accuracy on unseen words.  Word dropout (replacing a word by <unk>
with probability alpha / (alpha + its training count)) teaches the model to tag
from characters and context when the word embedding says nothing.

Scores are read by a softmax per token or by a CRF (`crf.CRF`).  Padding never
scores: the sentence encoder is `PaddedLSTM` (a padded batch gives each sentence
what it gets alone), char features are computed for real tokens only, and loss
and decoding look at real positions only.

Dropout masks are drawn from random bytes (`byte_dropout`): on CPU that is
several times cheaper than `torch.bernoulli`, which showed up in profiles.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .crf import CRF
from .sequence import PaddedLSTM, byte_dropout


class CharCNN(nn.Module):
    """Max-pooled 1-D convolution over each word's character embeddings, then tanh: one
    vector per word from its characters [N, W] (0 = padding after the word).

    Computed without materialising the [N, W, kernel * dim] windows: a convolution over
    embeddings is linear in them, so each kernel offset's contribution is precomputed for
    the whole (small) character table, [chars, out] per offset, and a position's output is
    the sum of `kernel` rows of those tables, one `embedding_bag` (a fused gather-and-add).
    Measured on CPU it is several times cheaper than Conv1d or unfold + Linear, and the
    same function (checked in the tests against nn.Conv1d with zero padding).
    Positions after the word never win the max: they read a -1e4 row.
    """

    def __init__(self, num_chars: int, char_dim: int, out_dim: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"char CNN kernel must be odd (centred windows), got {kernel}")
        self.kernel, self.num_chars, self.out_features = kernel, num_chars, out_dim
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.weight = nn.Parameter(torch.empty(kernel, char_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.uniform_(self.weight, -(kernel * char_dim) ** -0.5, (kernel * char_dim) ** -0.5)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        n, width = chars.shape
        chars = chars.long()
        side = self.kernel // 2
        # [kernel * num_chars, out]: offset k's table is rows k*num_chars..; the centre
        # offset's padding row is -1e4 so padded positions never win the max.
        # Row 0 (padding) embeds as zeros, as Conv1d's zero padding would read it.
        embedded = F.pad(self.embedding.weight[1:], (0, 0, 1, 0))
        with torch.autocast(chars.device.type, enabled=False):  # a tiny matmul; keep the sums in fp32
            tables = torch.einsum("cd,kdo->kco", embedded.float(), self.weight.float())
        centre = torch.zeros(self.num_chars, 1, device=chars.device)
        centre[0] = -1e4
        tables = torch.cat([t + centre if k == side else t for k, t in enumerate(tables.unbind(0))])
        padded = F.pad(chars, (side, side))  # zero beyond both ends, like Conv1d's padding
        index = torch.stack([padded[:, k : k + width] + k * self.num_chars for k in range(self.kernel)], dim=-1)
        index = index.reshape(n * width, self.kernel)
        # Traced for export: a gather and a sum (ONNX has no embedding_bag; the same sums).
        h = tables[index].sum(1) if torch.jit.is_tracing() else F.embedding_bag(index, tables, mode="sum")
        return torch.tanh(h.view(n, width, -1).amax(1) + self.bias)


class CharLSTM(nn.Module):
    """A BiLSTM over each word's characters [N, W]; the word is its two final states."""

    def __init__(self, num_chars: int, char_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.lstm = PaddedLSTM(char_dim, hidden_size, bidirectional=True)
        self.out_features = 2 * hidden_size

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.embedding(chars.long()), (chars != 0).sum(1))[1]


class Tagger(nn.Module):
    """forward(words [B, T], chars [B, T, W], lengths [B]) -> tag scores [B, T, K]; with
    `tags` [B, T] -> (summed loss over real tokens, number of tokens scored)."""

    def __init__(self, num_words: int, num_chars: int, num_tags: int, word_dim: int = 100, char_dim: int = 50,
                 char_kind: Literal["cnn", "lstm", "none"] = "cnn", char_size: int = 100, char_kernel: int = 3,
                 hidden_size: int = 200, num_layers: int = 2, bidirectional: bool = True, dropout: float = 0.33,
                 word_unk_probability: torch.Tensor | None = None, crf: bool = False,
                 tag_names: list[str] | None = None) -> None:
        super().__init__()
        self.num_tags, self.dropout = num_tags, dropout
        # The tag of each id (ids >= num_tags: gold tags no output gives), where evaluation
        # needs the names (entity spans on BIO data); None: it does not.  Not a weight.
        self.tag_names = tag_names
        self.words = nn.Embedding(num_words, word_dim, padding_idx=0)
        self.chars: nn.Module | None = (
            CharCNN(num_chars, char_dim, char_size, char_kernel) if char_kind == "cnn"
            else CharLSTM(num_chars, char_dim, char_size) if char_kind == "lstm" else None
        )
        features = word_dim + (self.chars.out_features if self.chars is not None else 0)
        # One PaddedLSTM per layer, so the dropout between layers is `byte_dropout` too.
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList([
            PaddedLSTM(features if i == 0 else directions * hidden_size, hidden_size, bidirectional=bidirectional)
            for i in range(num_layers)
        ])
        self.out = nn.Linear(directions * hidden_size, num_tags)
        self.crf = CRF(num_tags) if crf else None
        # Word dropout: each word id's chance to be read as <unk> in training.  A buffer, so
        # it travels with the weights; all zeros: off.
        self.register_buffer(
            "unk_probability",
            word_unk_probability.float() if word_unk_probability is not None else torch.zeros(num_words),
        )

    def char_features(self, chars: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, F]: the char encoder over each distinct real word of the batch, scattered back.
        Traced for export, over every position instead: the distinct words and their width depend
        on the data, which a traced graph would freeze (trailing zero columns change nothing)."""
        if torch.jit.is_tracing():
            encoded = self.chars(chars.reshape(-1, chars.shape[-1])).reshape(*mask.shape, -1)
            return torch.where(mask[..., None], encoded, torch.zeros_like(encoded))
        real = chars[mask]  # [n, W]
        width = max(int((real != 0).sum(1).max()), 1) if len(real) else 1
        distinct, where = torch.unique(real[:, :width], dim=0, return_inverse=True)
        encoded = self.chars(distinct)[where]
        out = encoded.new_zeros(*mask.shape, encoded.shape[-1])
        return out.index_put((mask,), encoded)

    def forward(self, words: torch.Tensor, chars: torch.Tensor, lengths: torch.Tensor,
                tags: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        mask = torch.arange(words.shape[1], device=words.device)[None, :] < lengths.to(words.device)[:, None]
        words = words.long()
        if self.training and bool(self.unk_probability.any()):
            unk = torch.rand(words.shape, device=words.device) < self.unk_probability[words]
            words = words.masked_fill(unk, 1)  # 1 = <unk>
        parts = [self.words(words)]
        if self.chars is not None:
            parts.append(self.char_features(chars, mask))
        h = torch.cat(parts, -1)
        for layer in self.layers:
            h, _ = layer(byte_dropout(h, self.dropout, self.training), lengths)
        scores = self.out(byte_dropout(h, self.dropout, self.training))
        return scores if tags is None else self.loss_from_scores(scores, tags, lengths)

    def loss_from_scores(self, scores: torch.Tensor, tags: torch.Tensor,
                         lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed negative log-likelihood, tokens scored): over real tokens whose tag the model
        knows (a tag id >= num_tags, one training never had, cannot be learned and does not score).
        With a CRF, the sentence likelihood; unknown tags are read as tag 0 there."""
        mask = torch.arange(tags.shape[1], device=tags.device)[None, :] < lengths.to(tags.device)[:, None]
        tags = tags.long()
        known = mask & (tags < self.num_tags)
        if self.crf is not None:
            loss = self.crf.neg_log_likelihood(scores, tags.masked_fill(~known, 0), lengths).sum()
        else:
            loss = F.cross_entropy(scores[known].float(), tags[known], reduction="sum")
        return loss, known.sum()

    def decode(self, scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Best tag per token [B, T] (Viterbi with a CRF, else the argmax)."""
        if self.crf is not None:
            return self.crf.decode(scores, lengths)
        return scores.argmax(-1)
