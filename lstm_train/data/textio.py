"""Reading a user's text file: one place that says which file, line and byte is not UTF-8.

Every reader of text data (CoNLL, parallel corpora, SST trees, predict's --file) goes
through `read_utf8`, so a bad file gets the same clear error whichever task reads it.
"""

from __future__ import annotations

import codecs
import re
import warnings
from collections.abc import Iterator
from pathlib import Path


def read_utf8(path: Path | str, error: type[Exception], missing: str = "") -> str:
    """The file's text, a UTF-8 byte-order mark dropped.  A missing path raises
    FileNotFoundError (with `missing` appended: where the file should be); bytes that are
    not UTF-8 raise `error` naming the file, the line and the byte, and how to convert."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" + (" (it is a folder)" if path.exists() else "") + missing)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); convert the "
                    "file to UTF-8 (e.g. iconv -f latin1 -t UTF-8)") from None
    return text[1:] if text.startswith("\ufeff") else text


def line_at(path: Path | str, offset: int) -> int:
    """The 1-based line of byte `offset` of a file (for an error message: read up to it a MB at a time)."""
    lines, done = 1, 0
    with open(path, "rb") as f:
        while done < offset and (raw := f.read(min(1 << 20, offset - done))):
            lines += raw.count(b"\n")
            done += len(raw)
    return lines


def decode_block(path: Path | str, offset: int, block: bytes, error: type[Exception]) -> str:
    """A block of a file's bytes (from byte `offset`) as UTF-8 text: bytes that are not UTF-8 raise
    `error` naming the file, the line and the byte, as `read_utf8` does (a streamed reader's blocks)."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as e:
        at = offset + e.start
        raise error(f"{path}:{line_at(path, at)}: not UTF-8 text (byte 0x{block[e.start]:02x} at offset {at}); "
                    "convert the file to UTF-8 (e.g. iconv -f latin1 -t UTF-8)") from None


MAX_LINE_BYTES = 64 << 20  # a streamed line longer than this is refused (`utf8_lines`)


def iter_utf8_lines(path: Path | str, error: type[Exception], missing: str = "") -> Iterator[str]:
    """`read_utf8(path).splitlines()` one line at a time (a streamed reader holds one line, not
    the file): the same lines, the same errors."""
    for text in utf8_lines(path, error, missing):
        yield from text.splitlines()


def utf8_lines(path: Path | str, error: type[Exception], missing: str = "") -> Iterator[str]:
    """The file's text one line at a time, each with its \\n (only \\n ends a line here; joined, the
    lines are `read_utf8(path)`): memory bounded by MAX_LINE_BYTES, a longer line refused once that
    much is read, never read whole.  The same errors as `read_utf8` (a UTF-8 sequence never holds
    byte 0x0A, so decoding line by line is decoding the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" + (" (it is a folder)" if path.exists() else "") + missing)
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_LINE_BYTES:  # refused once that much is read, never read whole
                raise error(f"{path}:{number}: a line of more than {MAX_LINE_BYTES >> 20} MiB without a line break: "
                            "not a line of text (is this the file you meant?)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{number}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {offset + e.start}); "
                            "convert the file to UTF-8 (e.g. iconv -f latin1 -t UTF-8)") from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            offset += len(raw)
            yield text


_C1 = re.compile("[\x80-\x9f]")
_warned: set[str] = set()


def declares_c1(codec: str) -> bool:
    """Whether `codec` maps bytes 0x80-0x9F to the C1 control characters (latin-1, ISO 8859-*):
    in real text those bytes are almost always cp1252's curly quotes, dashes and euro sign."""
    name = codecs.lookup(codec).name
    return name == "latin-1" or name.startswith("iso8859")


def warn_c1(path: Path | str, encoding: str, line: int, text: str) -> None:
    """Warn once per file when `text` (read as `encoding`) holds C1 control characters."""
    found = _C1.search(text)
    if found is None or str(path) in _warned:
        return
    _warned.add(str(path))
    warnings.warn(f"{path}:{line}: read as {encoding}, it holds control character U+{ord(found.group()):04X} "
                  "(byte 0x{0:02x}); the file is probably cp1252 (Windows) text: set data.encoding: cp1252"
                  .format(ord(found.group())), stacklevel=3)
