"""A task's data as tensor columns: what `load_data` returns and the prepared-data store maps.
It lives below the task layer, so the store (`data/store/prepared.py`) can build it without importing
`lstm_train.tasks`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .ragged import Column, Ragged, to_device

Split = tuple[Column, ...]


@dataclass
class Splits:
    """A task's data as tensors.  Each split is a tuple of columns of the same number of
    samples: a dense tensor [N, ...] (images, windows, labels) or a `Ragged` set of
    variable-length sequences (token ids, tags).  A batch of a split (`gather`) is the
    same tuple with dense columns index-selected and ragged ones padded (`Padded`).

    Tensors stay in their compact stored form (uint8 pixels, int token ids): the loop
    moves them to the training device once and the task converts each batch on the fly.
    `info` carries everything else evaluation, `finish` and `predict` need (class
    names, a vocabulary, scaling statistics...): it is saved in every checkpoint, so
    `predict` and a resumed run rebuild the model from it without loading any data.
    """

    train: Split
    test: Split
    val: Split | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> Splits:
        """Every column on `device`: a no-op for mapped columns on the CPU (`to_device`)."""
        move = lambda split: None if split is None else tuple(  # noqa: E731
            c.to(device) if isinstance(c, Ragged) else to_device(c, device) for c in split)
        return Splits(move(self.train), move(self.test), move(self.val), self.info)
