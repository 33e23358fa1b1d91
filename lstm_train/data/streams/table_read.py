"""A table file's byte range read as lines: the record boundary and the decoder of text_classify's files.

A CSV/TSV/JSON Lines file is cut into pieces by the streams' one cutter (`base.cut`) on line
boundaries (a CSV/TSV only at a newline outside quotes, `RecordEnds`); a piece's bytes are decoded a block at a
time (`range_lines`), and an error raised on a piece's lines names the file's line
(`renumber`), so a piece reads as the whole file would.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..readers import textfiles
from .table_columns import _safe_newline
from ..readers.textfiles import TextDataError
from ..textio import line_at

BLOCK_BYTES = 4 << 20  # read and decoded at a time inside a piece


class RecordEnds:
    """`base.cut`'s boundary for a CSV/TSV/JSON Lines file: the first offset just after a newline at
    or after a byte offset; with `quoted`, after a newline with an even number of quotes before it
    in the file (outside a quoted field).  Asked with growing offsets, it reads the file once,
    forward, a block at a time (bytes.count: memchr speed)."""

    def __init__(self, path: Path, quoted: bool, block: int = 1 << 20) -> None:
        self.path, self.quoted, self.block = path, quoted, block
        self.offset, self.raw, self.quotes, self.done = 0, b"", 0, False  # raw: the block at offset

    def _advance(self, f: Any) -> None:
        if self.quoted:
            self.quotes += self.raw.count(b'"')
        self.offset += len(self.raw)
        f.seek(self.offset)
        self.raw = f.read(self.block)
        self.done = not self.raw

    def __call__(self, target: int) -> int:
        with open(self.path, "rb") as f:
            while not self.done:
                if target >= self.offset + len(self.raw):
                    self._advance(f)
                    continue
                start = max(target - self.offset, 0)
                before = self.quotes + (self.raw.count(b'"', 0, start) if self.quoted else 0)
                at = _safe_newline(self.raw, start, before, self.quoted)
                if at is not None:
                    return self.offset + at + 1
                self._advance(f)
        return self.offset


def range_lines(path: Path, start: int, end: int | None, encoding: str, size: int | None = None) -> Iterator[str]:
    """The lines of bytes [start, end) of a file, decoded `size` bytes at a time (BLOCK_BYTES; a small
    size where only the first lines are read: a header); bytes that are not `encoding` raise an error naming
    the file, its line and the byte offset in the file."""
    codec = textfiles._codec(encoding) if start == 0 else encoding
    size = size or BLOCK_BYTES
    with open(path, "rb") as f:
        f.seek(start)
        offset, left, carry = start, (None if end is None else end - start), b""
        while True:
            raw = f.read(size if left is None else min(size, left))
            if left is not None:
                left -= len(raw)
            data = carry + raw
            cut = len(data) if not raw else data.rfind(b"\n") + 1
            if not data:
                return
            if cut == 0:
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            try:
                text = codecs.decode(block, codec)
            except UnicodeDecodeError as e:
                where = offset + e.start
                raise TextDataError(f"{path}:{line_at(path, where)}: not valid {encoding} (byte 0x{block[e.start]:02x} "
                                    f"at offset {where}); re-save the file as UTF-8 or set data.encoding") from None
            codec = encoding if codec == "utf-8-sig" else codec
            offset += cut
            yield from text.splitlines(keepends=True)
            if not raw:
                return


def renumber(error: TextDataError, path: Path, start: int, header_lines: int) -> TextDataError:
    """An error raised on a piece's lines (numbered from the header) renumbered as lines of the file."""
    if start == 0:
        return error
    base = line_at(path, start) - 1 - header_lines
    message = re.sub(rf"^{re.escape(str(path))}:(\d+):", lambda m: f"{path}:{int(m.group(1)) + base}:", str(error))
    return TextDataError(message)


def chain_header(head: list[str], lines: Iterator[str]) -> Iterator[str]:
    """The header (quoted, on one line) then the piece's lines; `renumber` moves the reader's
    line numbers to the file's."""
    yield from head
    yield from lines
