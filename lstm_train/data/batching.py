"""Which samples each process reads at each step: one plan, the same on every rank.

An epoch is a seeded permutation of the training set (seed + epoch, as
`torch.utils.data.DistributedSampler` draws it), padded by repeating its head to
a multiple of the world size.  It is cut into *global batches*, one per optimizer
step, and each global batch is dealt to the ranks and to their gradient
accumulation micro-batches by interleaving:

    global batch g, world W, accumulation A:
        rank r, micro-batch j  <-  g[r + W*j :: W*A]

So the samples of a step do not depend on how many processes share it: one
process with two micro-batches and two processes with one each read the same
samples and (at equal micro-batch sizes) compute the same gradient.  That is what
makes `data.global_batch_size` world-size invariant, and what lets a checkpoint
resume at another world size with every sample still seen once per epoch.

Variable-length data (a task with `Ragged` columns) adds length bucketing: the
permutation is cut into pools of `bucket_pool` global batches, each pool is sorted
by length and cut into global batches (of a sample count, or of a padded-token
budget with `max_tokens`), and the epoch's batches are shuffled.  A global batch
holds sequences of similar length and little padding, and since it is sorted,
interleaving gives every rank and micro-batch the same mix of lengths.

Language models train over *streams* instead (`bptt` set, from a `StreamData` section):
the n training tokens are cut into S = global batch contiguous streams of
(n - 1) // S tokens, and step k of an epoch reads window k of every stream (a token
position matrix [S, window]).  Rank r of W owns the contiguous streams r*S/W .. (r+1)*S/W - 1
(and its accumulation micro-batches contiguous parts of those), so the task's carried
state belongs to the same streams at every step and 1 and W ranks compute the same thing.

Everything is a pure function of (seed, epoch, sizes, lengths): every rank computes
the same plan without talking to the others, and a resumed run skips to its step
by index.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, overload

import torch

from ..schema import DataBase, batch_settings

if TYPE_CHECKING:
    from ..distributed import BatchLayout


def epoch_order(n: int, epoch: int, seed: int, world_size: int, shuffle: bool = True,
                dtype: torch.dtype = torch.long) -> torch.Tensor:
    """The epoch's sample order: DistributedSampler's permutation, padded to a multiple of the world.
    `dtype=torch.int32` draws the same permutation in half the memory (a plan over millions of
    rows)."""
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        order = torch.randperm(n, generator=generator, dtype=dtype)
    else:
        order = torch.arange(n, dtype=dtype)
    total = math.ceil(n / world_size) * world_size
    if total > n:  # pad by repeating the head, as DistributedSampler does
        order = torch.cat([order] * math.ceil(total / n))[:total]
    return order


def cut_counts(order: torch.Tensor, lengths: torch.Tensor, max_tokens: int, multiple: int = 1,
               slots: int = 1) -> list[int]:
    """The sizes of the consecutive batches `order` is cut into: each a multiple of `multiple`
    samples (the world size), such that dealt over `slots` micro-batches each holds at most
    `max_tokens` padded tokens (samples x longest); a batch holds at least one multiple even
    past the budget.  An empty sequence counts as one token: it still takes a row."""
    lens = lengths[order.long()].clamp(min=1).tolist()
    counts, start, n = [], 0, len(lens)
    while start < n:
        count, longest = 0, 0
        while start + count < n:
            step = lens[start + count : start + count + multiple]
            wider = max(longest, *step)
            if count and -(-(count + len(step)) // slots) * wider > max_tokens:
                break
            count, longest = count + len(step), wider
        counts.append(count)
        start += count
    return counts


def cut_by_tokens(order: torch.Tensor, lengths: torch.Tensor, max_tokens: int, multiple: int = 1,
                  slots: int = 1) -> list[torch.Tensor]:
    """`order` cut into the batches of `cut_counts` (views of it)."""
    return list(order.split(cut_counts(order, lengths, max_tokens, multiple, slots)))


class EpochBatches(Sequence[torch.Tensor]):
    """An epoch's global batches without a Python object per batch: the epoch's samples in one
    index tensor (int32 below 2^31 samples), cut at `starts`, read in the order `perm` (the
    shuffled batches of a bucketed epoch; None: in order).  A plan over millions of rows then
    costs 4 bytes a row and 8 a batch, once per epoch, instead of a tensor per batch."""

    def __init__(self, order: torch.Tensor, starts: torch.Tensor, perm: torch.Tensor | None = None) -> None:
        self.order, self.starts, self.perm = order, starts, perm

    def __len__(self) -> int:
        return len(self.starts) - 1

    @overload
    def __getitem__(self, i: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, i: slice) -> list[torch.Tensor]: ...

    def __getitem__(self, i: int | slice) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        j = int(self.perm[i]) if self.perm is not None else i
        return self.order[int(self.starts[j]) : int(self.starts[j + 1])].long()


def check_streams(n: int, streams: int, bptt: int) -> None:
    """A training stream of `n` tokens must give each of `streams` streams one window of `bptt`."""
    if (n - 1) // streams < bptt:
        raise ValueError(
            f"the training text has {n} tokens, shorter than one window of data.bptt={bptt} tokens per stream for "
            f"{streams} streams: it must have at least {streams * bptt + 1} tokens; use a longer text, a smaller "
            "data.bptt or fewer streams (data.global_batch_size)")


@dataclass
class BatchPlan:
    """The interface the loop follows: the global batches of every epoch and this rank's
    micro-batches of each.  Two plans implement it: `SamplePlan` (shuffled, optionally
    bucketed samples) and `StreamPlan` (windows of contiguous token streams); `for_data`
    picks one from a job's data section.  Called as `BatchPlan(...)` it picks by `bptt`
    (set: a stream plan), so callers that build a plan by its keywords keep working.
    """

    n: int
    global_batch: int
    world_size: int = 1
    accum: int = 1
    seed: int = 1
    shuffle: bool = True
    _counts: dict[int, int] = field(default_factory=dict, repr=False)

    def __new__(cls, *args: object, **kwargs: object) -> BatchPlan:
        if cls is BatchPlan:
            cls = StreamPlan if kwargs.get("bptt") is not None else SamplePlan
        return object.__new__(cls)

    @classmethod
    def for_data(cls, data: DataBase, layout: BatchLayout, n: int, seed: int,
                 lengths: torch.Tensor | None) -> BatchPlan:
        """The plan of a job's data section over `layout` (`distributed.batch_layout`): the one
        the loop follows, and that `bench`'s floor replays."""
        s = batch_settings(data)
        common = {"n": n, "global_batch": layout.global_batch, "world_size": layout.world, "accum": layout.accum,
                  "seed": seed}
        if s.bptt is not None:
            return StreamPlan(**common, bptt=s.bptt, variable_bptt=s.variable_bptt, shuffle=False)
        return SamplePlan(**common, lengths=lengths, bucketing=s.bucketing, bucket_pool=s.bucket_pool,
                          max_tokens=s.max_tokens)

    @property
    def slots(self) -> int:
        return self.world_size * self.accum

    def check_resume(self, global_batch: int, source: object) -> None:
        """Whether a run saved at `global_batch` may continue under this plan (samples: it may;
        the loop only warns)."""

    def global_batches(self, epoch: int) -> Sequence[torch.Tensor]:
        """The epoch's global batches, in training order (sample indices or token positions, CPU)."""
        raise NotImplementedError

    def steps_in_epoch(self, epoch: int) -> int:
        raise NotImplementedError

    def micro_batches(self, batch: torch.Tensor, rank: int) -> list[torch.Tensor]:
        """Rank `rank`'s micro-batches of a global batch."""
        raise NotImplementedError

    def total_steps(self, epochs: int) -> int:
        return sum(self.steps_in_epoch(e) for e in range(epochs))

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, index within it) of global step `step` (0-based count of steps done)."""
        epoch = 0
        while step >= self.steps_in_epoch(epoch):
            step -= self.steps_in_epoch(epoch)
            epoch += 1
        return epoch, step

    def steps(self, epoch: int, rank: int, start: int = 0) -> Iterator[list[torch.Tensor]]:
        """This rank's micro-batches of each step of `epoch`, from step `start` on."""
        batches = self.global_batches(epoch)
        for i in range(start, len(batches)):
            yield self.micro_batches(batches[i], rank)


@dataclass
class SamplePlan(BatchPlan):
    """Samples: a seeded permutation per epoch, bucketed by length where there are lengths.

    `global_batch` is in samples (all ranks and micro-batches of one optimizer step
    together); with `max_tokens` the budget of one micro-batch is `max_tokens` padded
    tokens and a global batch holds up to `max_tokens * world_size * accum`.
    """

    lengths: torch.Tensor | None = None  # CPU int64 [n]; None: fixed-size samples
    bucketing: bool = True
    bucket_pool: int = 100
    max_tokens: int | None = None
    _cache: dict[int, EpochBatches] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.lengths is None:
            raise ValueError("max_tokens needs per-sample lengths (a task with variable-length columns)")

    def global_batches(self, epoch: int) -> EpochBatches:
        if epoch not in self._cache:
            self._cache = {epoch: self._make(epoch)}  # one epoch at a time is all the loop reads
            self._counts[epoch] = len(self._cache[epoch])
        return self._cache[epoch]

    def _pool(self) -> int:
        """Samples sorted by length together: `bucket_pool` global batches (of the typical
        count under a token budget), a multiple of the world size."""
        if self.max_tokens is None:
            pool = self.bucket_pool * self.global_batch
        else:
            mean = max(1.0, float(self.lengths.float().mean()))
            per_batch = max(self.slots, int(self.max_tokens * self.slots / mean) // self.world_size * self.world_size)
            pool = self.bucket_pool * per_batch
        return max(self.world_size, pool // self.world_size * self.world_size)

    def _make(self, epoch: int) -> EpochBatches:
        """The epoch's batches: pools of the permutation sorted by length in place (the only
        corpus-sized array, int32), cut into batches (sizes only), the batches shuffled."""
        order = epoch_order(self.n, epoch, self.seed, self.world_size, self.shuffle,
                            torch.int32 if self.n < 2**31 else torch.long)
        sorting = self.lengths is not None and self.bucketing
        if self.max_tokens is None and not sorting:
            every = torch.arange(0, len(order) + self.global_batch, self.global_batch).clamp_(max=len(order))
            return EpochBatches(order, every.unique_consecutive())
        pool, counts = self._pool(), []
        for a in range(0, len(order), pool):
            chunk = order[a : a + pool]
            if sorting:
                chunk.copy_(chunk[torch.argsort(self.lengths[chunk.long()], stable=True)])
            if self.max_tokens is None:
                counts += _fixed_counts(len(chunk), self.global_batch)
            else:
                counts += cut_counts(chunk, self.lengths, self.max_tokens, self.world_size, self.slots)
        perm = None
        if sorting:  # pools were sorted: shuffle the batches so lengths do not rise within each pool
            generator = torch.Generator()
            generator.manual_seed(self.seed + epoch + 7919)
            perm = torch.randperm(len(counts), generator=generator, dtype=torch.int32)
        return EpochBatches(order, _starts(counts), perm)

    def steps_in_epoch(self, epoch: int) -> int:
        if self.max_tokens is None:  # a sample count cuts every epoch into the same number of steps
            return math.ceil(math.ceil(self.n / self.world_size) * self.world_size / self.global_batch)
        if epoch not in self._counts:
            self._counts[epoch] = len(self._make(epoch))
        return self._counts[epoch]

    def micro_batches(self, batch: torch.Tensor, rank: int) -> list[torch.Tensor]:
        """Empty micro-batches are left out; since a global batch is a multiple of the world
        size, every rank leaves out the same ones."""
        if self.slots == 1:
            return [batch]
        parts = [batch[rank + self.world_size * j :: self.slots] for j in range(self.accum)]
        return [p for p in parts if len(p)]


def _fixed_counts(n: int, size: int) -> list[int]:
    """Sizes of `n` samples cut into batches of `size` (the last one shorter)."""
    return [size] * (n // size) + ([n % size] if n % size else [])


def _starts(counts: list[int]) -> torch.Tensor:
    starts = torch.zeros(len(counts) + 1, dtype=torch.long)
    torch.cumsum(torch.tensor(counts, dtype=torch.long), 0, out=starts[1:])
    return starts


@dataclass
class StreamPlan(BatchPlan):
    """Streams (a language model): step k reads window k of `global_batch` contiguous streams;
    see the module's doc."""

    bptt: int = 128
    variable_bptt: bool = False
    shuffle: bool = False

    def __post_init__(self) -> None:
        if self.global_batch % self.slots:
            raise ValueError(f"{self.global_batch} streams cannot be shared evenly by {self.world_size} process(es) x "
                             f"{self.accum} micro-batch(es): set data.global_batch_size to a multiple of {self.slots}")
        check_streams(self.n, self.global_batch, self.bptt)

    def check_resume(self, global_batch: int, source: object) -> None:
        """Streams are cut by the global batch: a run cannot continue its carried state over
        another number of them."""
        if global_batch != self.global_batch:
            raise ValueError(f"{source} was trained on {global_batch} streams, this launch has {self.global_batch}: "
                             f"set data.global_batch_size={global_batch} to resume it, or use another train.output_dir")

    @property
    def stream_length(self) -> int:
        """Input tokens per stream: the last one's target is the next stream's first token."""
        return (self.n - 1) // self.global_batch

    def windows(self, epoch: int) -> list[tuple[int, int]]:
        """(offset, length) of every window of an epoch, the same on every rank."""
        length = self.stream_length
        if not self.variable_bptt:
            return [(o, min(self.bptt, length - o)) for o in range(0, length, self.bptt)]
        generator = torch.Generator()
        generator.manual_seed(self.seed + epoch)
        out, offset = [], 0
        while offset < length:  # AWD-LSTM's draw (Merity et al. 2017, main.py)
            base = self.bptt if float(torch.rand((), generator=generator)) < 0.95 else self.bptt / 2
            size = max(5, int(base + 5 * float(torch.randn((), generator=generator))))
            size = min(size, self.bptt + 20, length - offset)
            out.append((offset, size))
            offset += size
        return out

    def window_positions(self, offset: int, size: int) -> torch.Tensor:
        """Token positions [S, size] of one window of every stream (inputs; targets are +1)."""
        starts = torch.arange(self.global_batch) * self.stream_length + offset
        return starts[:, None] + torch.arange(size)

    def global_batches(self, epoch: int) -> list[torch.Tensor]:
        return [self.window_positions(o, size) for o, size in self.windows(epoch)]

    def steps_in_epoch(self, epoch: int) -> int:
        if not self.variable_bptt:
            return math.ceil(self.stream_length / self.bptt)
        if epoch not in self._counts:
            self._counts[epoch] = len(self.windows(epoch))
        return self._counts[epoch]

    def micro_batches(self, batch: torch.Tensor, rank: int) -> list[torch.Tensor]:
        """Rank r's contiguous block of streams, cut into its micro-batches."""
        return list(batch.tensor_split(self.world_size)[rank].tensor_split(self.accum))

    def steps(self, epoch: int, rank: int, start: int = 0) -> Iterator[list[torch.Tensor]]:
        for offset, size in self.windows(epoch)[start:]:  # built per step: an epoch's positions are corpus-sized
            yield self.micro_batches(self.window_positions(offset, size), rank)


def eval_batches(n: int, rank: int, world_size: int, batch_size: int, lengths: torch.Tensor | None = None,
                 max_tokens: int | None = None) -> list[torch.Tensor]:
    """Evaluation batches of this rank: every sample once over all ranks, no padding.

    Fixed-size samples: rank r takes a contiguous block (sizes differ by one at most).
    Variable-length ones are sorted by length first and dealt round-robin, so each rank
    gets the same mix of lengths and each batch little padding; `max_tokens` then cuts by
    padded tokens.  A split smaller than the world leaves some ranks with no batch at all
    (never an empty one)."""
    if lengths is None:
        mine = torch.tensor_split(torch.arange(n), world_size)[rank]
    else:
        mine = torch.argsort(lengths, stable=True)[rank::world_size]
    if lengths is None or max_tokens is None:
        return [b for b in mine.split(batch_size) if len(b)]
    return cut_by_tokens(mine, lengths, max_tokens)


def eval_batches_for(data: DataBase, n: int, rank: int, world_size: int,
                     lengths: torch.Tensor | None) -> list[torch.Tensor]:
    """`eval_batches` of a job's data section (its `eval_batch_size`, and `max_tokens` where a
    variable-length task's section has one): the loop's and the bench's evaluation."""
    return eval_batches(n, rank, world_size, data.eval_batch_size, lengths, batch_settings(data).max_tokens)
