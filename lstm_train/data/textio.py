"""Reading a user's text file: one place that says which file, line and byte is not UTF-8.

Every reader of text data (CoNLL, parallel corpora, SST trees, predict's --file) goes
through `read_utf8`, so a bad file gets the same clear error whichever task reads it.
"""

from __future__ import annotations

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
