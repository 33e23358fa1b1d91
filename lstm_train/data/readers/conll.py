"""Tagged sentences from CoNLL files: Universal Dependencies CoNLL-U and the whitespace-column format.

Two formats cover nearly every sequence-labelling corpus:

* CoNLL-U (Universal Dependencies): ten tab-separated columns per word, `#`
  comment lines, a blank line after each sentence.  Parsing is the `conllu`
  library's; this module adds what a training job needs around it: each
  sentence's line number for error messages, a check of the column count, and
  the choice of the tag column (upos, xpos, deprel, feats...).  Only word lines
  are tagged: multiword-token ranges (`1-2 don't`) and empty nodes (`8.1`) are
  kept in the file (and in `fill_conllu`'s output) but are not words to tag.
* Whitespace columns (CoNLL-2000 chunking, CoNLL-2003 NER and most in-house
  files): one token per line, the token in the first column and the tag in the
  last (or `column`), a blank line between sentences; `-DOCSTART-` lines are
  document markers, not tokens.

Every problem is a `ConllError` (a `ValueError`, so the CLI exits 2) naming the
file and line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import conllu
from conllu.exceptions import ParseException

from ...schema import ConfigError
from ..textio import iter_utf8_lines

CONLLU_FIELDS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
# Columns a tagger can learn (id, form and head are not labels of a word).
CONLLU_TAG_FIELDS = ("upos", "xpos", "lemma", "feats", "deprel", "deps", "misc")
# In these "_" means "not annotated" (a missing tag); in feats/deps/misc it means "none" (a value).
_UNDERSCORE_MISSING = ("upos", "xpos", "lemma", "deprel")
# Keep every column as the text in the file, so feats/deps/misc can be tags and a filled
# file serialises back to the same bytes.
_RAW = {name: (lambda fields, i: fields[i]) for name in ("feats", "head", "deps", "misc")}
_FIELD_SPLIT = re.compile(r"[ \t]+")  # ASCII blanks only: str.split() also splits on U+00A0 inside tokens
DOCSTART = "-DOCSTART-"

Format = Literal["conllu", "columns"]


class ConllError(ConfigError):
    """A CoNLL file that cannot be used as given; the message names the file and line."""


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str] | None  # None when the file is read for prediction only
    line: int  # 1-based line of the sentence's first line in its file


def detect_format(path: Path) -> Format:
    """CoNLL-U by extension (.conllu, .conllu.txt), else whitespace columns."""
    return "conllu" if ".conllu" in Path(path).name.lower() else "columns"


def read_tagged(path: Path, fmt: Format | Literal["auto"], column: str | int | None,
                with_tags: bool = True) -> list[TaggedSentence]:
    """The sentences of one file; `column` None means the format's default (upos / the last)."""
    return list(iter_tagged(path, fmt, column, with_tags))


def iter_tagged(path: Path, fmt: Format | Literal["auto"], column: str | int | None,
                with_tags: bool = True) -> Iterator[TaggedSentence]:
    """`read_tagged` one sentence at a time (a streamed preparation holds one sentence, not the file)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "conllu":
        if column is not None and not isinstance(column, str):
            raise ConllError(f"{path}: a CoNLL-U tag column is a field name, one of {', '.join(CONLLU_TAG_FIELDS)}; "
                             f"got {column!r}")
        return iter_conllu(path, column or "upos", with_tags)
    if column is not None and not isinstance(column, int):
        raise ConllError(f"{path}: the tag column of a whitespace-column file is a column number (0 = the token, "
                         f"-1 = the last); got {column!r}. For CoNLL-U files set data.format: conllu")
    return iter_columns(path, -1 if column is None else column, with_tags)


def _read_lines(path: Path) -> Iterator[str]:
    """The file's lines, read as they are used; a file of blank lines only is an error (at its end)."""
    seen = False
    for line in iter_utf8_lines(path, ConllError):
        seen = seen or bool(line.strip())
        yield line
    if not seen:
        raise ConllError(f"{path}: the file is empty (no sentences)")


def _blocks(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of each blank-line-separated block."""
    start, block = 0, []
    for number, line in enumerate(lines, 1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


# -- CoNLL-U --------------------------------------------------------------------------


@dataclass
class ParsedSentence:
    """One CoNLL-U sentence as `conllu` parsed it, with the file line of its start and of each token."""

    start: int
    token_lines: list[int]
    tokens: conllu.TokenList

    def words(self) -> list[tuple[int, conllu.Token]]:
        """(line, token) of each syntactic word: an integer id, not a `1-2` multiword range
        nor an `8.1` empty node."""
        return [(line, t) for line, t in zip(self.token_lines, self.tokens) if isinstance(t["id"], int)]


def parse_conllu(path: Path) -> list[ParsedSentence]:
    """Every sentence of a CoNLL-U file, parsed by `conllu`, after checking that each token
    line has the ten columns (conllu itself accepts short lines silently)."""
    return list(iter_parsed(path))


def iter_parsed(path: Path) -> Iterator[ParsedSentence]:
    """`parse_conllu` one sentence at a time."""
    for start, block in _blocks(_read_lines(path)):
        token_lines = []
        for offset, line in enumerate(block):
            if line.startswith("#"):
                continue
            columns = line.split("\t")
            if len(columns) != len(CONLLU_FIELDS):
                raise ConllError(
                    f"{path}:{start + offset}: {len(columns)} tab-separated columns, CoNLL-U needs 10 "
                    f"({' '.join(f.upper() for f in CONLLU_FIELDS)}); is this a whitespace-column file "
                    "(data.format: columns)?"
                )
            token_lines.append(start + offset)
        try:
            parsed = conllu.parse("\n".join(block) + "\n\n", field_parsers=_RAW)
        except ParseException as e:
            raise ConllError(f"{path}:{_bad_line(block, start, e)}: not valid CoNLL-U ({e})") from None
        if len(parsed) != 1 or len(parsed[0]) != len(token_lines):
            raise ConllError(f"{path}:{start}: not valid CoNLL-U in the sentence starting here")
        sentence = ParsedSentence(start, token_lines, parsed[0])
        if not sentence.words():
            raise ConllError(f"{path}:{start}: a sentence with no words (only comments, multiword ranges or "
                             "empty nodes); every sentence needs at least one word line")
        yield sentence


def _bad_line(block: list[str], start: int, error: ParseException) -> int:
    """The line of a block conllu could not parse (its error does not say): parse line by line."""
    for offset, line in enumerate(block):
        if line.startswith("#"):
            continue
        try:
            conllu.parser.parse_line(line, CONLLU_FIELDS, {**conllu.parser.DEFAULT_FIELD_PARSERS, **_RAW})
        except ParseException:
            return start + offset
    return start


def iter_conllu(path: Path, column: str = "upos", with_tags: bool = True) -> Iterator[TaggedSentence]:
    """The sentences of a CoNLL-U file, one at a time, with the tags of `column`."""
    column = column.lower()
    if column not in CONLLU_TAG_FIELDS:
        raise ConllError(f"{path}: no CoNLL-U tag column {column!r}; choose one of {', '.join(CONLLU_TAG_FIELDS)}")
    for sentence in iter_parsed(path):
        words = sentence.words()
        tags = None
        if with_tags:
            tags = []
            for line, token in words:
                tag = token[column]
                if tag in (None, "") or (tag == "_" and column in _UNDERSCORE_MISSING):
                    raise ConllError(
                        f"{path}:{line}: word {token['form']!r} has no {column.upper()} ({tag or '_'}); the tag "
                        "column must be filled on every word of a training or evaluation file (is the column right?)"
                    )
                tags.append(tag)
        yield TaggedSentence([t["form"] for _, t in words], tags, sentence.start)


def fill_conllu(path: Path, column: str, tagger: Callable[[list[list[str]]], list[list[str]]]) -> str:
    """The CoNLL-U file with `column` of every word set by `tagger` (sentences of words ->
    sentences of tags); comments, multiword ranges, empty nodes and other columns as they were."""
    column = column.lower()
    if column not in CONLLU_TAG_FIELDS:
        raise ConllError(f"{path}: no CoNLL-U tag column {column!r}; choose one of {', '.join(CONLLU_TAG_FIELDS)}")
    parsed = parse_conllu(path)
    tags = tagger([[t["form"] for _, t in s.words()] for s in parsed])
    for sentence, sentence_tags in zip(parsed, tags):
        for (_, token), tag in zip(sentence.words(), sentence_tags):
            token[column] = tag
    return "".join(s.tokens.serialize() for s in parsed)


# -- whitespace columns ---------------------------------------------------------------


def split_tokens(line: str) -> list[str]:
    """Whitespace tokens of a line: ASCII spaces and tabs (a no-break space stays inside a token)."""
    stripped = line.strip(" \t\r\n")
    return _FIELD_SPLIT.split(stripped) if stripped else []


def iter_columns(path: Path, column: int = -1, with_tags: bool = True) -> Iterator[TaggedSentence]:
    """The sentences of a columns file (a word and its tags a line), one at a time, with the tags of `column`."""
    found = 0
    for start, block in _blocks(_read_lines(path)):
        words, tags, first = [], [], None
        for offset, line in enumerate(block):
            fields = split_tokens(line)
            if fields[0] == DOCSTART:
                if words:  # a marker inside a sentence ends it
                    found += 1
                    yield TaggedSentence(words, tags if with_tags else None, first)
                    words, tags, first = [], [], None
                continue
            number = start + offset
            if with_tags:
                if len(fields) < 2:
                    raise ConllError(f"{path}:{number}: one column ({line.strip()!r}); a token line is "
                                     "'TOKEN [...] TAG', whitespace-separated")
                if not -len(fields) <= column < len(fields) or column in (0, -len(fields)):
                    raise ConllError(f"{path}:{number}: {len(fields)} columns; the tag column {column} does not "
                                     f"exist here (0 is the token; -1 the last; valid: 1..{len(fields) - 1})")
                tags.append(fields[column])
            words.append(fields[0])
            first = first or number
        if words:
            found += 1
            yield TaggedSentence(words, tags if with_tags else None, first)
    if not found:
        raise ConllError(f"{path}: no sentences (only {DOCSTART} lines)")
