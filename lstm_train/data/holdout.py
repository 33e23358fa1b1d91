"""A validation split held out of the training data, for tasks whose dataset has none (MNIST).

Why here and seeded: a sweep compares its points on validation data, never on the test split
(hyperparameters chosen on the test set overstate how well the chosen model does).  The held-out
samples are drawn with their own generator (`seed`), so every point of a sweep, every rank and
every resume holds out the same ones, and the prepared-data store keeps them apart once.
"""

from __future__ import annotations

import torch

from .ragged import Column, Ragged


def holdout(split: tuple[Column, ...], fraction: float, seed: int) -> tuple[tuple[Column, ...], tuple[Column, ...]]:
    """(train, val): `fraction` of the samples (at least one, never all) drawn at random for
    validation, the rest for training, each in their original order."""
    n = len(split[0])
    if n < 2:
        raise ValueError(f"data.val_fraction={fraction}: {n} training sample(s) cannot give a validation split")
    k = min(n - 1, max(1, round(n * fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:k].sort().values, order[k:].sort().values
    return select(split, train_idx), select(split, val_idx)


def select(split: tuple[Column, ...], indices: torch.Tensor) -> tuple[Column, ...]:
    """The samples at `indices` of every column (dense rows, or ragged sequences compacted)."""
    return tuple(c.select(indices) if isinstance(c, Ragged) else c.index_select(0, indices.to(c.device)) for c in split)
