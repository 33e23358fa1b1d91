"""A linear-chain conditional random field over per-token scores, for padded batches.

Why not a package: the PyPI CRF layers for PyTorch (pytorch-crf 0.7.2, TorchCRF
1.1.0) have had no release since 2019-2020, and pytorch-crf's Viterbi backtracks
in Python per sequence.  This is the textbook layer in ~80 lines, vectorised over
the batch (the only Python loop is over time steps), and tested against brute
force enumeration of every tag sequence on tiny inputs (tests/test_tagging.py).

Scores: start[y_0] + sum_t emissions[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t]
+ end[y_{n-1}].  Positions at or after a sequence's length never score: the
forward recursion and Viterbi keep their state unchanged there.
"""

from __future__ import annotations

import torch
from torch import nn


class CRF(nn.Module):
    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))

    @staticmethod
    def _mask(emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(emissions.shape[1], device=emissions.device)
        return steps[None, :] < lengths.to(emissions.device)[:, None]

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unnormalised score of the tag sequences `tags` [B, T]: [B]."""
        emissions = emissions.float()
        mask = self._mask(emissions, lengths)
        tags = tags.masked_fill(~mask, 0)
        emitted = emissions.gather(2, tags[..., None])[..., 0].masked_fill(~mask, 0).sum(1)
        moved = self.transitions[tags[:, :-1], tags[:, 1:]].masked_fill(~mask[:, 1:], 0).sum(1)
        last = tags.gather(1, (lengths.to(tags.device) - 1).clamp_min(0)[:, None])[:, 0]
        return self.start[tags[:, 0]] + emitted + moved + self.end[last]

    def log_partition(self, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log of the sum of exp(score) over every tag sequence (the forward algorithm): [B]."""
        emissions = emissions.float()
        mask = self._mask(emissions, lengths)
        alpha = self.start[None, :] + emissions[:, 0]
        for t, (emission, real) in enumerate(zip(emissions.unbind(1), mask.unbind(1))):
            if t == 0:
                continue
            step = torch.logsumexp(alpha[:, :, None] + self.transitions[None], dim=1) + emission
            alpha = torch.where(real[:, None], step, alpha)
        return torch.logsumexp(alpha + self.end[None, :], dim=1)

    def neg_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """-log p(tags | emissions) per sequence: [B]."""
        return self.log_partition(emissions, lengths) - self.score(emissions, tags, lengths)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The highest-scoring tag sequence of each row (Viterbi): [B, T] (0 after each length)."""
        emissions = emissions.float()
        mask = self._mask(emissions, lengths)
        batch, steps, tags = emissions.shape
        identity = torch.arange(tags, device=emissions.device).expand(batch, tags)
        best = self.start[None, :] + emissions[:, 0]
        pointers = []
        for t in range(1, steps):
            candidates = best[:, :, None] + self.transitions[None]  # [B, from, to]
            top, previous = candidates.max(dim=1)
            real = mask[:, t, None]
            best = torch.where(real, top + emissions[:, t], best)
            pointers.append(torch.where(real, previous, identity))  # padding: stay on the same tag
        path = [(best + self.end[None, :]).argmax(1)]
        for previous in reversed(pointers):
            path.append(previous.gather(1, path[-1][:, None])[:, 0])
        out = torch.stack(path[::-1], dim=1)
        return out.masked_fill(~mask, 0)
