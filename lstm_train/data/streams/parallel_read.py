"""Parallel text read in byte ranges: pieces cut on the same line of both files, their pairs checked.

A line-aligned corpus is two files whose line i translate each other, so a piece must be the
same lines of both: `aligned_cuts` cuts the source file as every stream cuts (`base.cut` on line
ends), counts the lines before each cut point in one read of it (`bytes.count`: memchr speed),
then reads the target file once for the byte offsets of those same lines; both files' line
counts come out of the same reads.  Counts that differ are refused
before anything is decoded (`check_counts`), naming both files, both counts and the first line
where they part (found by reading both files in step, a line at a time: only on that error).

`range_lines` decodes a byte range a block at a time; bytes that are not UTF-8 raise an error
naming the file, its line and the byte offset; `pairs` gives a piece's sentence pairs with the
checks and messages of `parallel.read_line_aligned` / `read_tsv` (lines empty on both sides
skipped and counted), numbered as lines of the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..parallel import ParallelDataError, _column_index, tsv_pair
from .base import Piece, cut
from .table_read import RecordEnds
from ..textio import MAX_LINE_BYTES, decode_block, line_at

BLOCK_BYTES = 4 << 20  # read and decoded at a time
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class PairPiece(Piece):
    """A `Piece` of parallel text: bytes [start, end) of `path` (the source file, or the TSV) and,
    for line-aligned files, bytes [target_start, target_end) of `target`: the same lines.  `line`:
    the file's 1-based line number of the piece's first line; `columns`: a TSV's (source, target)
    column indices; `key`: the side whose sentence decides a split-off pair's split."""

    target: str | None = None
    target_start: int = 0
    target_end: int | None = None
    line: int = 1
    columns: tuple[int, int] = (0, 1)
    key: str = "source"

    def origin(self) -> str:
        """The corpus as messages and the data report name it (`parallel.Pairs.origin`)."""
        return f"{self.path} + {self.target}" if self.target is not None else self.path


def line_cuts(path: str, size: int) -> tuple[list[tuple[int, int]], int]:
    """Where `path` is cut into pieces, as (offset, lines before it), and its line count (a last line
    without its newline counts).  The offsets are the streams' one cutter's (`base.cut` on line ends,
    every piece about `size` bytes, as every other stream is cut); the line numbers come from one more
    read of the file (`bytes.count`: memchr speed)."""
    total = Path(path).stat().st_size
    offsets = [b for _, b in cut(0, total, RecordEnds(Path(path), quoted=False), size)][:-1]
    befores: list[int] = []
    lines, offset, last = 0, 0, b"\n"
    with open(path, "rb") as f:
        while raw := f.read(1 << 20):
            end = offset + len(raw)
            while len(befores) < len(offsets) and offsets[len(befores)] <= end:
                befores.append(lines + raw.count(b"\n", 0, offsets[len(befores)] - offset))
            lines += raw.count(b"\n")
            offset, last = end, raw[-1:]
    return list(zip(offsets, befores)), lines + (1 if offset and last != b"\n" else 0)


def _line_offsets(path: str, wanted: list[int]) -> tuple[list[int], int]:
    """The byte offset just after the k-th newline for each k of `wanted` (ascending; the file's
    size where it has fewer), and the file's line count."""
    found: list[int] = []
    lines, offset, last = 0, 0, b"\n"
    with open(path, "rb") as f:
        while raw := f.read(1 << 20):
            here = raw.count(b"\n")
            while len(found) < len(wanted) and wanted[len(found)] <= lines + here:
                newlines = np.flatnonzero(np.frombuffer(raw, np.uint8) == 10)
                found.append(offset + int(newlines[wanted[len(found)] - lines - 1]) + 1)
            lines += here
            offset, last = offset + len(raw), raw[-1:]
    found += [offset] * (len(wanted) - len(found))
    return found, lines + (1 if offset and last != b"\n" else 0)


def aligned_cuts(source: str, target: str, size: int) -> list[tuple[int, int, int]]:
    """(line before which, source offset, target offset) of each cut of two line-aligned files,
    the files' line counts checked equal first."""
    cuts, source_lines = line_cuts(source, size)
    offsets, target_lines = _line_offsets(target, [n for _, n in cuts])
    check_counts(source, source_lines, target, target_lines)
    return [(n, a, b) for (a, n), b in zip(cuts, offsets) if a < Path(source).stat().st_size]


def check_counts(source: str, source_lines: int, target: str, target_lines: int) -> None:
    """Refuse line-aligned files of different line counts: both counts and where they seem to part
    (the first line empty in one file only), found reading both files in step."""
    if source_lines == target_lines:
        return
    common = min(source_lines, target_lines)
    hint = f"line {common + 1} is the first that only one file has"
    pairs = zip(range_lines(source, 0, None), range_lines(target, 0, None))
    for i, (s, t) in enumerate(pairs):
        if bool(s.strip()) != bool(t.strip()):
            hint = f"they seem to part at line {i + 1}, empty in {source if not s.strip() else target} only"
            break
    raise ParallelDataError(f"{source} has {source_lines} lines but {target} has {target_lines}: line-aligned files "
                            f"must have one line per sentence pair; {hint}")


def range_lines(path: str, start: int, end: int | None) -> Iterator[str]:
    """The lines of bytes [start, end) of a UTF-8 file without their line ends (\\n, and a \\r
    before it), a UTF-8 byte-order mark at the file's start dropped, decoded a block at a time."""
    with open(path, "rb") as f:
        f.seek(start)
        offset, left, carry = start, None if end is None else end - start, b""
        while True:
            raw = f.read(BLOCK_BYTES if left is None else min(BLOCK_BYTES, left))
            if left is not None:
                left -= len(raw)
            data = carry + raw
            if not data:
                return
            cut = len(data) if not raw else data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) > MAX_LINE_BYTES:
                    raise ParallelDataError(f"{path}:{line_at(path, offset)}: a line of more than "
                                            f"{MAX_LINE_BYTES >> 20} MiB without a line break: not a line of text "
                                            "(is this the file you meant?)")
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            skip = 3 if offset == 0 and block.startswith(_BOM) else 0
            text = decode_block(path, offset + skip, block[skip:], ParallelDataError)
            lines = text.split("\n")
            if text.endswith("\n"):
                lines.pop()
            yield from (line[:-1] if line.endswith("\r") else line for line in lines)
            offset += cut
            if not raw:
                return


class Blanks:
    """Lines empty on both sides, counted as `pairs` skips them."""

    def __init__(self) -> None:
        self.count = 0


def pairs(piece: PairPiece, blanks: Blanks) -> Iterator[tuple[int, str, str]]:
    """(line, source, target) of each sentence pair of the piece, stripped; lines empty on both
    sides skipped (counted in `blanks`); a line empty on one side only, or a TSV row without both
    columns, refused naming the file and line."""
    if piece.target is None:
        yield from _tsv_pairs(piece, blanks)
        return
    sources = range_lines(piece.path, piece.start, piece.end)
    targets = range_lines(piece.target, piece.target_start, piece.target_end)
    for number, (s, t) in enumerate(zip(sources, targets), start=piece.line):
        s, t = s.strip(), t.strip()
        if s and t:
            yield number, s, t
        elif not s and not t:
            blanks.count += 1
        else:
            empty, other = (piece.path, piece.target) if not s else (piece.target, piece.path)
            raise ParallelDataError(
                f"{empty}, line {number}: empty line, but line {number} of {other} is not; every sentence needs its "
                "translation (remove the pair from both files, or fix the alignment)")


def _tsv_pairs(piece: PairPiece, blanks: Blanks) -> Iterator[tuple[int, str, str]]:
    for number, line in enumerate(range_lines(piece.path, piece.start, piece.end), start=piece.line):
        if not line.strip():
            blanks.count += 1
            continue
        s, t = tsv_pair(line, piece.columns, piece.path, number)
        yield number, s, t


def tsv_header(path: str, source_column: int | str, target_column: int | str, header: bool
               ) -> tuple[tuple[int, int], int]:
    """A TSV's (source, target) column indices, names looked up in its header, and the byte
    offset where its rows start (after the header line)."""
    if not header:
        names, start = None, 0
    else:
        with open(path, "rb") as f:
            first = f.readline(MAX_LINE_BYTES + 1)
        start = len(first)
        names = next(range_lines(path, 0, start), "").split("\t") if start else None
    columns = (_column_index(source_column, names, Path(path), "source"),
               _column_index(target_column, names, Path(path), "target"))
    return columns, start
