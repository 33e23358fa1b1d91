"""How a task's files become a prepared entry: pieces, two passes, shards.

This is the contract between a task (which knows its file formats, tokenizers and
splits) and the prepared-data store (which knows where entries live, how they are
locked, checked, written in chunks and run on every core or as a SLURM job array).
It sits below the task layer: nothing here imports `lstm_train.tasks`.

A task's `Task.stream_data()` returns a `Stream`.  The store then runs:

1. `pieces()`: the corpus cut into byte ranges of its files by the one cutter here (`cut`:
   about `PIECE_BYTES` each, at most that for tables, ending on a record boundary the stream names: a line, a
   character, a newline outside quotes), or a whole file where a format is not cut
   (Parquet, a datasets folder, SST trees, CoNLL files).  Pieces do NOT depend on how many shards or
   workers prepare them: the cut is a function of the files and the data section
   alone, so the entry is the same from 1 shard or N.  A piece lies wholly in one
   split when the split is positional (a language model's fraction cut is made a
   piece boundary); `split=None` means the piece's rows are assigned one by one by
   a rule that depends on the row alone (a seeded hash of its content), never on
   its position in a shard.
2. `scan(piece)` for every piece (pass 1, in parallel): small JSON statistics
   (character / word / label counts, row counts), bounded by the vocabulary, not
   the corpus: nested dicts of counts, so that
3. `combine(a, b)` (one function here, for every stream) joins two scans as they arrive (counts
   added), so memory holds one scan, not one per piece; `plan(scan)` then runs once on the joined scan:
   everything encoding needs, as JSON (the vocabulary, the classes, a trained BPE model's JSON).
4. `encode(piece, plan, out)` for every piece (pass 2, in parallel): the piece's
   rows appended to `out` (an `EntryWriter`), chunk by chunk; returns small JSON
   counts.  Consecutive pieces of one shard share one writer; the store
   concatenates shards' columns in piece order.
5. `info(plan, counts)` once: the entry's `Splits.info`.

Every method is called on a fresh object in a worker process (or a SLURM array
task): a Stream keeps nothing between calls but what `__init__` got (the job),
and must be picklable.  Workers are forked (no second interpreter start-up per
worker); a stream therefore uses numpy, `tokenizers` and plain Python, never torch
(torch's thread pools do not survive a fork: a forked worker waits forever on a lock
the parent's threads held).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..store.entry_format import EntryWriter

T = TypeVar("T")
# A piece's size, the same for every stream: fixed (not a share of the corpus), so that pieces never
# depend on the shard or worker count; 32 MB keeps a worker's memory a block and gives every core work.
PIECE_BYTES = int(os.environ.get("LSTM_TRAIN_PIECE_BYTES", 32 << 20))


@dataclass(frozen=True)
class Piece:
    """Bytes [start, end) of one source file, cut on a record boundary; `end` None: to the end
    of the file (a whole file).  `split`: the split every row of the piece belongs to, or None
    when rows are assigned one by one (by a rule of the row alone)."""

    index: int
    path: str
    start: int = 0
    end: int | None = None
    split: str | None = None

    def describe(self) -> str:
        span = "" if self.start == 0 and self.end is None else f" bytes {self.start}-{self.end}"
        return f"piece {self.index} ({self.path}{span})"


@runtime_checkable
class Stream(Protocol):
    """A task's data preparation in two passes over pieces (see the module docstring).

    Optional attribute `in_process` (bool, default False): prepared in the preparing process, never
    in a worker (the default stream: a task's `load_data` may use torch and return what JSON cannot hold).

    Optional attribute `scratch` (str): a folder the store sets before the passes, where scan may
    keep per-piece work for encode (e.g. tokens, so texts are split once); it lives in the work
    dir (seen by every SLURM node) or a temporary folder, and is untrusted: check what you read."""

    def pieces(self) -> list[Piece]: ...

    def scan(self, piece: Piece) -> dict[str, Any]: ...

    def plan(self, scan: dict[str, Any]) -> dict[str, Any]: ...

    def encode(self, piece: Piece, plan: dict[str, Any], out: EntryWriter) -> dict[str, Any]: ...

    def info(self, plan: dict[str, Any], counts: list[dict[str, Any]]) -> dict[str, Any]: ...


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter): a stream's rows encoded a chunk at a time."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def cut(start: int, end: int, boundary: Callable[[int], int], size: int | None = None,
        even: bool = False) -> list[tuple[int, int]]:
    """Bytes [start, end) of a file as consecutive ranges of about `size` bytes (`PIECE_BYTES`, read at
    the call), each ending on a record boundary: `boundary(pos)` is the first one at or after byte
    `pos` (asked with growing `pos`; `end` or more when there is none).  No range ends within half
    a piece of `end`: the last one takes the rest.

    `even` (the table streams): ceil(span / size) ranges of equal size instead, none longer than
    `size` but for the record that crosses its end.  A table piece's work (Arrow blocks, its rows'
    columns) grows with its bytes, and a file of 1.5 pieces is then two: every core gets work and
    no worker holds more than one piece's worth."""
    size = size or PIECE_BYTES
    tail = 1.5
    if even and end > start:
        count = math.ceil((end - start) / size)  # pieces of at most `size`, then all of one size
        size, tail = math.ceil((end - start) / count), 1.0
    out, a = [], start
    while a < end:
        b = end if end - a <= size * tail else min(end, boundary(a + size))
        if b <= a:
            b = end
        out.append((a, b))
        a = b
    return out


def combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two scans joined: counts added key by key, nested dicts joined alike (a's keys first, then b's
    new ones, as `Counter.update` orders them): the order of the pieces does not matter."""
    out = dict(a)
    for key, value in b.items():
        mine = out.get(key)
        if mine is None:
            out[key] = value
        elif isinstance(mine, dict) and isinstance(value, dict):
            out[key] = combine(mine, value)
        elif isinstance(mine, (int, float)) and isinstance(value, (int, float)):
            out[key] = mine + value
        else:
            raise TypeError(f"scans hold counts: {key!r} is {type(mine).__name__} and {type(value).__name__}")
    return out
