"""How a task's files become a prepared entry: pieces, two passes, shards.

This is the contract between a task (which knows its file formats, tokenizers and
splits) and the prepared-data store (which knows where entries live, how they are
locked, checked, written in chunks and run on every core or as a SLURM job array).
It sits below the task layer: nothing here imports `lstm_train.tasks`.

A task's `Task.stream_data()` returns a `Stream`.  The store then runs:

1. `pieces()`: the corpus cut into byte ranges of its files, on record boundaries
   (a line, a blank line between CoNLL-U sentences; a whole file where a format
   cannot be cut, such as Parquet).  Pieces do NOT depend on how many shards or
   workers prepare them: the cut is a function of the files and the data section
   alone, so the entry is the same from 1 shard or N.  A piece lies wholly in one
   split when the split is positional (a language model's fraction cut is made a
   piece boundary); `split=None` means the piece's rows are assigned one by one by
   a rule that depends on the row alone (a seeded hash of its content), never on
   its position in a shard.
2. `scan(piece)` for every piece (pass 1, in parallel): small JSON statistics
   (character / word / label counts, row counts), bounded by the vocabulary, not
   the corpus.
3. `combine(a, b)` joins two scans as they arrive (counts added: order does not matter), so
   memory holds one scan, not one per piece; `plan(scan)` then runs once on the joined scan:
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

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..store.entry_format import EntryWriter


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

    Optional attribute `scratch` (str): a folder the store sets before the passes, where scan may
    keep per-piece work for encode (e.g. tokens, so texts are split once); it lives in the work
    dir (seen by every SLURM node) or a temporary folder, and is untrusted: check what you read."""

    def pieces(self) -> list[Piece]: ...

    def scan(self, piece: Piece) -> dict[str, Any]: ...

    def combine(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]: ...

    def plan(self, scan: dict[str, Any]) -> dict[str, Any]: ...

    def encode(self, piece: Piece, plan: dict[str, Any], out: EntryWriter) -> dict[str, Any]: ...

    def info(self, plan: dict[str, Any], counts: list[dict[str, Any]]) -> dict[str, Any]: ...
