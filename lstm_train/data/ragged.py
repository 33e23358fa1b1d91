"""Variable-length sequences stored flat: one values tensor plus offsets, no Python per sample.

`Ragged` holds N sequences (token ids, tags, feature vectors...) end to end:
sample i is `values[offsets[i]:offsets[i + 1]]`.  A batch is gathered and padded
in a few tensor operations (`pad`), on whatever device the values live on, so
the training loop cuts variable-length batches as cheaply as fixed-size ones.
Lengths are also kept on the CPU, where batch planning (bucketing, token budgets)
reads them without touching the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`, never copied between two names of the CPU.  `Tensor.to("cpu:0")`
    copies a CPU tensor, and accelerate names the device `cpu:0` in a CPU process group: the
    copy of a memory-mapped column is corpus-sized anonymous memory on every rank (a 400 MB
    CSV's columns: +700 MiB per rank).  Every whole-column move goes through here."""
    device = torch.device(device)
    if device.type == "cpu" and tensor.device.type == "cpu":
        return tensor
    return tensor.to(device)


class Padded(NamedTuple):
    """A padded batch of one ragged column: data [B, T, ...] and each sequence's length [B]."""

    data: torch.Tensor
    lengths: torch.Tensor

    def mask(self) -> torch.Tensor:
        """[B, T] bool, True on real positions."""
        steps = torch.arange(self.data.shape[1], device=self.data.device)
        return steps[None, :] < self.lengths[:, None]


@dataclass
class Ragged:
    values: torch.Tensor  # [total, *feature]
    offsets: torch.Tensor  # int64 [N + 1], offsets[0] == 0, on the values' device
    lengths_cpu: torch.Tensor  # int64 [N], always on the CPU

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]] | Sequence[torch.Tensor],
                       dtype: torch.dtype = torch.long) -> Ragged:
        """From a list of lists (or 1-D+ tensors); one concatenation, done once at load time."""
        parts = [s if isinstance(s, torch.Tensor) else torch.as_tensor(s, dtype=dtype) for s in sequences]
        lengths = torch.tensor([len(p) for p in parts], dtype=torch.long)
        values = torch.cat(parts).to(dtype) if parts else torch.zeros(0, dtype=dtype)
        return cls.from_lengths(values, lengths)

    @classmethod
    def from_lengths(cls, values: torch.Tensor, lengths: torch.Tensor) -> Ragged:
        lengths = lengths.to(torch.long).cpu()
        if int(lengths.sum()) != len(values):
            raise ValueError(f"lengths add up to {int(lengths.sum())} but there are {len(values)} values")
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return cls(values, offsets.to(values.device), lengths)

    def __len__(self) -> int:
        return len(self.lengths_cpu)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.values[int(self.offsets[i]) : int(self.offsets[i + 1])]

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to(self, device: torch.device | str) -> Ragged:
        return Ragged(to_device(self.values, device), to_device(self.offsets, device), self.lengths_cpu)

    def select(self, indices: torch.Tensor | Sequence[int]) -> Ragged:
        """The sequences at `indices`, as a new compact Ragged (for splitting a set)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        lengths = self.lengths_cpu[idx]
        data, _ = self.pad(idx)
        keep = torch.arange(data.shape[1])[None, :] < lengths[:, None]
        return Ragged.from_lengths(data[keep.to(data.device)], lengths)

    def pad(self, indices: torch.Tensor, pad_value: int | float = 0, length: int | None = None) -> Padded:
        """Sequences `indices` as [B, T, ...] with `pad_value` after each one's end; T is the
        longest of them (or `length`).  Vectorised: a gather and a where."""
        idx_cpu = indices.cpu() if indices.device.type != "cpu" else indices
        lengths_cpu = self.lengths_cpu[idx_cpu]
        width = int(lengths_cpu.max()) if length is None and len(lengths_cpu) else (length or 0)
        idx = indices.to(self.offsets.device)
        starts = self.offsets[idx]
        lengths = lengths_cpu.to(self.values.device, non_blocking=True)
        steps = torch.arange(width, device=self.values.device)
        positions = starts[:, None] + steps[None, :]
        real = steps[None, :] < lengths[:, None]
        if len(self.values) == 0:
            shape = (len(idx), width, *self.values.shape[1:])
            return Padded(torch.full(shape, pad_value, dtype=self.values.dtype, device=self.values.device), lengths)
        gathered = self.values[positions.clamp_(max=len(self.values) - 1)]
        mask = real.reshape(*real.shape, *([1] * (self.values.dim() - 1)))
        data = torch.where(mask, gathered, torch.as_tensor(pad_value, dtype=self.values.dtype, device=gathered.device))
        return Padded(data, lengths)


Column = torch.Tensor | Ragged


def gather(columns: tuple[Column, ...], indices: torch.Tensor) -> tuple[torch.Tensor | Padded, ...]:
    """One batch of a split: dense columns index-selected, ragged ones padded."""
    out: list[torch.Tensor | Padded] = []
    for column in columns:
        if isinstance(column, Ragged):
            out.append(column.pad(indices))
        else:
            out.append(column.index_select(0, indices.to(column.device)))
    return tuple(out)


def sample_lengths(columns: tuple[Column, ...]) -> torch.Tensor | None:
    """Per-sample length for bucketing: the longest ragged column of each sample; None when
    every column has a fixed size."""
    ragged = [c.lengths_cpu for c in columns if isinstance(c, Ragged)]
    if not ragged:
        return None
    if len(ragged) == 1:  # no copy: for mapped data, the store's array itself
        return ragged[0]
    return torch.stack(ragged).amax(0)
