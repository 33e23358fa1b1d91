"""Parallel text: sentence pairs from Multi30k, Tatoeba or a user's own files, checked line by line.

A translation corpus is either two line-aligned text files (line i of one
translates line i of the other: Multi30k, Europarl, most of OPUS) or one TSV
file with a source and a target column (Tatoeba / manythings.org).  One
misplaced line shifts every pair after it and trains a model on nonsense
without a single error, so the readers here refuse what would misalign:
files of different line counts (both counts, and where they seem to part), a
line empty on one side only, a TSV row without both columns.  Lines empty on
both sides are skipped and counted.

These readers hold a file in memory: they read the small files `evaluate` is given.  A
training corpus is prepared as a stream (`streams/translate`, `streams/parallel_read`: the same checks
and messages, a byte range at a time), which also splits off the pairs of a corpus without an
official split (Tatoeba, a single user file) by a seeded hash of the key sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .textio import utf8_lines


class ParallelDataError(ValueError):
    """Parallel data that cannot be used as it is; the message names the file and line."""


@dataclass
class Pairs:
    """Aligned source and target sentences (raw text) and where each came from."""

    source: list[str]
    target: list[str]
    origin: str  # for messages: "train.de + train.en", "fra.txt"
    lines: list[int] = field(default_factory=list)  # 1-based line number of each pair in its file(s)
    skipped_blank: int = 0

    def __len__(self) -> int:
        return len(self.source)

    def subset(self, indices: Sequence[int]) -> Pairs:
        pick = lambda xs: [xs[i] for i in indices]  # noqa: E731
        return Pairs(pick(self.source), pick(self.target), self.origin, pick(self.lines) if self.lines else [])


def read_lines(path: Path) -> list[str]:
    """A UTF-8 text file's lines, without line ends (\\n or \\r\\n), streamed: a line over
    `textio.MAX_LINE_BYTES` is refused once that much is read.  Only \\n ends a line: Unicode
    line separators inside a sentence (U+2028, U+0085) stay part of it."""
    lines = [line[:-1] if line.endswith("\n") else line for line in utf8_lines(path, ParallelDataError)]
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_line_aligned(source_path: Path, target_path: Path) -> Pairs:
    """Two line-aligned files: line i of `source_path` translates line i of `target_path`."""
    source, target = read_lines(source_path), read_lines(target_path)
    if len(source) != len(target):
        common = min(len(source), len(target))
        hint = f"line {common + 1} is the first that only one file has"
        for i in range(common):
            if bool(source[i].strip()) != bool(target[i].strip()):
                hint = (f"they seem to part at line {i + 1}, empty in "
                        f"{source_path if not source[i].strip() else target_path} only")
                break
        raise ParallelDataError(
            f"{source_path} has {len(source)} lines but {target_path} has {len(target)}: line-aligned files must "
            f"have one line per sentence pair; {hint}"
        )
    pairs = Pairs([], [], f"{source_path} + {target_path}")
    for i, (s, t) in enumerate(zip(source, target)):
        if not s.strip() and not t.strip():
            pairs.skipped_blank += 1
            continue
        if not s.strip() or not t.strip():
            empty, other = (source_path, target_path) if not s.strip() else (target_path, source_path)
            raise ParallelDataError(
                f"{empty}, line {i + 1}: empty line, but line {i + 1} of {other} is not; every sentence needs its "
                "translation (remove the pair from both files, or fix the alignment)"
            )
        pairs.source.append(s.strip())
        pairs.target.append(t.strip())
        pairs.lines.append(i + 1)
    return pairs


def _column_index(spec: int | str, header: list[str] | None, path: Path, what: str) -> int:
    if isinstance(spec, int):
        return spec
    if header is None:
        raise ParallelDataError(f"{path}: {what} column {spec!r} is a name, but the file has no header "
                                "(set header: true, or give the column's 0-based index)")
    if spec not in header:
        raise ParallelDataError(f"{path}: no {what} column {spec!r} in the header; columns are {header}")
    return header.index(spec)


def tsv_pair(line: str, columns: tuple[int, int], path: Path | str, number: int) -> tuple[str, str]:
    """One TSV row's (source, target) sentences, stripped; a short row or an empty side is an
    error naming file and line (the one rule of the streamed and the in-memory readers)."""
    cells = line.split("\t")
    if len(cells) <= max(columns):
        raise ParallelDataError(
            f"{path}, line {number}: {len(cells)} column{'s' if len(cells) != 1 else ''} ({line[:60]!r}), but the "
            f"source is column {columns[0]} and the target column {columns[1]} (0-based, tab-separated)")
    s, t = cells[columns[0]].strip(), cells[columns[1]].strip()
    if not s or not t:
        raise ParallelDataError(f"{path}, line {number}: the {'source' if not s else 'target'} column is empty; "
                                "every sentence needs its translation")
    return s, t


def read_tsv(path: Path, source_column: int | str = 0, target_column: int | str = 1, header: bool = False) -> Pairs:
    """Sentence pairs from a tab-separated file (no quoting: sentences hold quotes and commas)."""
    path = Path(path)
    lines = read_lines(path)
    names = lines[0].split("\t") if header and lines else None
    src_col = _column_index(source_column, names, path, "source")
    tgt_col = _column_index(target_column, names, path, "target")
    pairs = Pairs([], [], str(path))
    for number, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        if not line.strip():
            pairs.skipped_blank += 1
            continue
        s, t = tsv_pair(line, (src_col, tgt_col), path, number)
        pairs.source.append(s)
        pairs.target.append(t)
        pairs.lines.append(number)
    return pairs
