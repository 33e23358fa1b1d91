"""Batches cut from tensors by index: the same order a DistributedSampler gives.

Each epoch is one seeded permutation of the whole training set (seed + epoch,
as `torch.utils.data.DistributedSampler` draws it), padded to a multiple of the
world size and dealt out round-robin, so every rank sees its own shard and the
tensor path and the DataLoader path agree sample for sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


def epoch_indices(n: int, epoch: int, seed: int, rank: int, world_size: int, shuffle: bool = True) -> torch.Tensor:
    """This rank's sample indices for one epoch, exactly as DistributedSampler(drop_last=False)."""
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    total = math.ceil(n / world_size) * world_size
    if total > n:  # pad by repeating the head, as DistributedSampler does
        repeats = math.ceil((total - n) / n)
        order = torch.cat([order] + [order] * repeats)[:total]
    return order[rank:total:world_size]


def batches_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    return math.ceil(math.ceil(n / world_size) / batch_size)


def tensor_batches(
    tensors: tuple[torch.Tensor, ...], indices: torch.Tensor, batch_size: int, start: int = 0
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches `start`, `start + 1`, ... of `indices`, gathered from tensors on their device."""
    indices = indices.to(tensors[0].device)
    for begin in range(start * batch_size, len(indices), batch_size):
        chosen = indices[begin : begin + batch_size]
        yield tuple(t.index_select(0, chosen) for t in tensors)


def shard_slices(n: int, rank: int, world_size: int, batch_size: int) -> Iterator[slice]:
    """Evaluation shard without padding: rank r takes a contiguous block, every sample once."""
    per_rank = math.ceil(n / world_size)
    begin, end = rank * per_rank, min(n, (rank + 1) * per_rank)
    for start in range(begin, end, batch_size):
        yield slice(start, min(end, start + batch_size))


def loader_batches(
    dataset: torch.utils.data.Dataset, indices: torch.Tensor, batch_size: int, start: int = 0, num_workers: int = 0
) -> Iterator[tuple[torch.Tensor, ...]]:
    """The classic path: a Dataset with per-sample transforms behind a DataLoader.

    The sampler is the same index list as `tensor_batches` uses, so both paths
    give the same samples in the same order; resuming skips by index, not by
    loading and dropping batches.
    """
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices[start * batch_size :].tolist(),
        num_workers=num_workers,
        persistent_workers=False,
    )
    yield from loader
