"""The column path of text_classify's preparation (data/streams/table_columns.py) against the Python path
it replaces: the same words for adversarial texts, the same parse (or a fallback) for odd CSV,
and byte-equal prepared entries for the same fixtures prepared both ways."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pytest

from lstm_train.data.streams import base, table_columns, table_words, text_classify
from lstm_train.data.readers import textfiles
from lstm_train.data.store.entry_format import EntryWriter
from lstm_train.data.store.runner import Options, run
from lstm_train.data.readers.textfiles import TextDataError
from lstm_train.tasks.text_classify import TextClassifyTask

from .test_text import job, write


def random_texts(n: int, alphabet: list[str], seed: int, most: int = 24) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(alphabet, rng.integers(1, most))) for _ in range(n)]


@pytest.mark.parametrize("rule", ["words", "whitespace"])
def test_ascii_tokens_split_as_the_python_rule(rule):
    """RE2's rewrite of the PTB rule (lookahead made consuming) gives Python's matches on texts
    built from the characters the rule's alternatives turn on."""
    alphabet = ["a", "n", "'", "t", "s", "re", "ve", "ll", "d", "m", "-", ".", "/", "_", "0", " ", "\t", "\n",
                "\r", "\x0b", "\x0c", "!", ",", '"', "n't", "don't", "N", "T", "S", "x"]
    texts = random_texts(20000, alphabet, seed=1) + ["I.B.M. can't won't 3.5 e-mail... --x-- a_b", "nn't n'tn't 'n't",
                                                    "e-don't a.-don't don't.isn't it's.isn't", "x_y__z 12,000 $5",
                                                    " \t ", "ab don't ab", "don't"]
    ids, words, lengths = table_columns.ascii_tokens(pa.array(texts), rule)
    assert table_columns.fast_rows(pa.array(texts)).all()
    got = np.split(np.array(words, dtype=object)[ids], np.cumsum(lengths)[:-1])
    want = table_words.ascii_words(texts, rule)
    assert [list(g) for g in got] == want
    assert want == textfiles.split_words(texts, rule)  # the Python rule is the tokenizer's (the reference)


def test_fast_rows_leave_non_ascii_and_separators_to_python():
    texts = pa.array(["plain ascii", "caf\u00e9", "a\x1cb", "x\x1f", "ok"])
    assert table_columns.fast_rows(texts).tolist() == [True, False, False, False, True]


def python_rows(data: bytes, delimiter: str = ",") -> list[list[str]] | None:
    try:
        rows = list(csv.reader(data.decode("utf-8").splitlines(keepends=True), delimiter=delimiter, strict=True))
    except (csv.Error, UnicodeDecodeError):
        return None
    return [r for r in rows if r]  # empty lines (a whitespace-only field is a row here: read_piece checks texts)


def arrow_rows(data: bytes, columns: int, delimiter: str = ",") -> list[list[str]] | None:
    names = [f"f{i}" for i in range(columns)]
    try:
        table = pcsv.read_csv(io.BytesIO(data), read_options=pcsv.ReadOptions(column_names=names),
                              parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                              convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                                  strings_can_be_null=False, null_values=[]))
    except pa.ArrowInvalid:
        return None
    return [list(r.values()) for r in table.to_pylist()] if table.num_columns == columns else None


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_csv_grammar_is_pythons_strict_reader(delimiter):
    """A block the grammar accepts is one Python's strict reader accepts, and Arrow parses it into
    the same rows; a block Python accepts is refused only for a splitlines-only line end."""
    pieces = ["a", "b", delimiter, '"', '""', "\n", "\r\n", "\r", " ", "\x0b", "\u2028", "\u00e9", "x y"]
    rng = np.random.default_rng(2)
    accepted = 0
    for _ in range(3000):
        data = "".join(rng.choice(pieces, rng.integers(1, 14))).encode()
        matched = pc.match_substring_regex(pa.array([data.decode()]), table_columns.csv_grammar(delimiter))[0].as_py()
        python = python_rows(data, delimiter)
        if matched:
            accepted += 1
            assert python is not None, data
            width = len(python[0]) if python else 0
            if python and all(len(r) == width for r in python):
                assert arrow_rows(data, width, delimiter) == python, data
        elif python is not None:
            assert any(c in data.decode() for c in "\x0b\u2028"), data
    assert accepted > 300


# ---------------------------------------------------------------------------------- entries both ways


def prepare(task: TextClassifyTask, folder: Path, columns: bool, workers: int, monkeypatch) -> dict:
    """The store's driver on `workers` processes, the column path on or off: {file: sha256}, info."""
    monkeypatch.setattr(text_classify, "COLUMNS", columns)
    out = folder / "entry"
    splits, info = run(task.stream_data(), out, folder / "work", Options(workers=workers))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
    return {"files": files, "splits": json.dumps(splits, sort_keys=True), "info": info}


def fixture_rows(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    words = ["the", "film", "isn't", "don't", "it's", "e-mail", "I.B.M.", "3.5", "...", "--", "caf\u00e9", "na\u00efve",
             "\u0130stanbul", "STRASSE", "Good", "BAD", "x\x1cy", "(a)", "won't", "O'Neil's", "y'all"]
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words, rng.integers(1, 14)))
        if i % 17 == 0:
            text = f'{text}\n"" quoted\r\nover lines'
        label = ["pos", "neg", " neu ", "3"][i % 4]
        rows.append(f'"{text.replace(chr(34), chr(34) * 2)} {i}",{label}')
    return rows


@pytest.mark.parametrize("spec", [
    {"val_fraction": 0.1, "test_fraction": 0.2, "max_length": 7},
    {"val_fraction": 0.0, "test_fraction": 0.3, "lowercase": False, "tokenizer": "whitespace", "max_length": None},
])
def test_column_path_entry_is_the_python_paths(tmp_path, monkeypatch, spec):
    """One CSV (quoted fields over lines and across piece boundaries, CRLF, non-ASCII and U+001C
    rows, labels with spaces), cut by fraction, prepared both ways: byte-equal files."""
    path = write(tmp_path / "d.csv", "text,label\r\n" + "\r\n".join(fixture_rows(1500)) + "\r\n")
    monkeypatch.setattr(base, "PIECE_BYTES", 9000)
    monkeypatch.setattr(table_columns, "BLOCK_BYTES", 2500)
    task = TextClassifyTask(job({"source": "files", "path": str(path), **spec}), run_dir=tmp_path / "r")
    stream = task.stream_data()
    assert len(stream.pieces()) > 5
    assert [stream._column_rows(p).reader for p in stream.pieces()] == ["arrow"] * len(stream.pieces())
    want = prepare(task, tmp_path / "python", False, 1, monkeypatch)
    assert prepare(task, tmp_path / "columns", True, 1, monkeypatch) == want
    assert prepare(task, tmp_path / "columns2", True, 2, monkeypatch) == want


def test_files_per_split_tsv_and_jsonl_both_ways(tmp_path, monkeypatch):
    rows = fixture_rows(600)
    lines = [json.dumps({"text": r.rsplit(",", 1)[0].strip('"').replace('""', '"'), "label": i % 3})
             for i, r in enumerate(rows)]
    tsv = ["text\tlabel"] + [r.rsplit(",", 1)[0] + "\t" + r.rsplit(",", 1)[1] for r in rows]
    paths = {"train": write(tmp_path / "train.jsonl", "\n".join(lines[:400]) + "\n"),
             "val": write(tmp_path / "val.tsv", "\n".join(tsv[:1] + tsv[401:501]) + "\n"),
             "test": write(tmp_path / "test.jsonl", "\n".join(lines[500:]) + "\n")}
    for s in ("val",):  # the TSV's labels must be the JSONL's classes
        text = paths[s].read_text().splitlines()
        paths[s].write_text("\n".join(text[:1] + [f"{t.rsplit(chr(9), 1)[0]}\t{i % 3}" for i, t in enumerate(text[1:])]) + "\n")
    task = TextClassifyTask(job({"source": "files", **{f"{s}_path": str(p) for s, p in paths.items()}}),
                            run_dir=tmp_path / "r")
    monkeypatch.setattr(base, "PIECE_BYTES", 6000)
    stream = task.stream_data()
    assert {p.split: stream._column_rows(p).reader for p in stream.pieces()} == \
        {"train": "python", "val": "arrow", "test": "python"}  # JSON Lines: the Python reader, the column kernels
    want = prepare(task, tmp_path / "python", False, 1, monkeypatch)
    assert prepare(task, tmp_path / "columns", True, 2, monkeypatch) == want


def test_a_table_a_bit_over_one_piece_is_two_even_pieces_prepared_by_workers(tmp_path, monkeypatch):
    """A CSV of 1.3 pieces (one piece by the text streams' rule: the last range takes up to 1.5) is
    cut into two pieces of about equal size, neither over a piece but for the record crossing
    its end; both run on worker processes, and the entry is the one prepared from one piece."""
    assert base.cut(0, 100, lambda pos: pos, size=32) == [(0, 32), (32, 64), (64, 100)]
    assert base.cut(0, 100, lambda pos: pos, size=32, even=True) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert base.cut(0, 40, lambda pos: pos, size=32, even=True) == [(0, 20), (20, 40)]
    path = write(tmp_path / "d.csv", "text,label\n" + "\n".join(fixture_rows(800)) + "\n")
    size = path.stat().st_size
    task = TextClassifyTask(job({"source": "files", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.1}),
                            run_dir=tmp_path / "r")
    monkeypatch.setattr(base, "PIECE_BYTES", 2 * size)
    assert len(task.stream_data().pieces()) == 1
    whole = prepare(task, tmp_path / "one", True, 1, monkeypatch)
    monkeypatch.setattr(base, "PIECE_BYTES", int(size / 1.3))
    pieces = task.stream_data().pieces()
    spans = [(p.end or size) - p.start for p in pieces]
    longest = max(map(len, path.read_bytes().split(b"\n")))  # a quoted row spans lines: generous
    assert len(pieces) == 2 and max(spans) <= base.PIECE_BYTES + 3 * longest and abs(spans[0] - spans[1]) < 6 * longest
    assert prepare(task, tmp_path / "two", True, 2, monkeypatch) == whole
    units = sorted((tmp_path / "two" / "work").glob("unit-*/done.json"))
    assert [json.loads(u.read_text())["pieces"] for u in units] == [[0], [1]]  # one worker's unit each


@pytest.mark.parametrize("odd, arrow", [
    ("a vertical tab \x0b in an unquoted field", False),  # Python ends the line there: a 1-field record
    ("a literal quote \" mid-field", True),  # Python's reader and Arrow's keep it alike
    ("\ufeffa byte order mark inside a block", True),  # kept as text by both
    ("row at a piece's start", False),  # made to start with a byte order mark below: Arrow would drop it
])
def test_odd_csv_takes_the_python_path_only_where_needed(tmp_path, monkeypatch, odd, arrow):
    rows = [f"row {i} fine text,{'ab'[i % 2]}" for i in range(300)]
    rows[150] = f"{odd},a"
    path = write(tmp_path / "d.csv", "text,label\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(base, "PIECE_BYTES", 2000)
    task = TextClassifyTask(job({"source": "files", "path": str(path)}), run_dir=tmp_path / "r")
    stream = task.stream_data()
    if odd.startswith("row at"):  # "row" -> a BOM (3 bytes: the cuts stay) at the second piece's start
        data = bytearray(path.read_bytes())
        at = stream.pieces()[1].start
        assert data[at:at + 3] == b"row"
        data[at:at + 3] = "\ufeff".encode()
        path.write_bytes(bytes(data))
    try:
        want = prepare(task, tmp_path / "python", False, 1, monkeypatch)
    except TextDataError as e:  # the vertical tab: Python's error, from either path
        assert not arrow
        with pytest.raises(TextDataError, match=re.escape(str(e))):
            prepare(task, tmp_path / "columns", True, 1, monkeypatch)
        return
    monkeypatch.setattr(text_classify, "COLUMNS", True)
    readers = [stream._column_rows(p).reader for p in stream.pieces()]
    assert ("python" not in readers) == arrow and readers.count("arrow") == len(readers) - (not arrow)
    assert prepare(task, tmp_path / "columns", True, 1, monkeypatch) == want


def test_errors_are_the_python_paths(tmp_path, monkeypatch):
    """Bad rows found by the column path are reported by the Python path: file, line, offset."""
    monkeypatch.setattr(base, "PIECE_BYTES", 64)
    rows = "text,label\n" + "".join(f"row {i} text,x\n" for i in range(40))
    cases = {"empty.csv": (rows + "  ,x\n").encode(), "label.csv": (rows + "a text, \n").encode(),
             "quote.csv": (rows + '"closed" then,x\n').encode()}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        stream = TextClassifyTask(job({"source": "files", "path": str(tmp_path / name)}),
                                  run_dir=tmp_path / "r").stream_data()
        with pytest.raises(TextDataError, match=rf"{re.escape(name)}:42: "):
            [stream.scan(p) for p in stream.pieces()]


def test_unknown_test_label_is_named_by_line(tmp_path, monkeypatch):
    train = write(tmp_path / "train.csv", "text,label\n" + "".join(f"t {i},{'ab'[i % 2]}\n" for i in range(50)))
    test = write(tmp_path / "test.csv", "text,label\n" + "".join(f"t {i},{'abc'[i % 3]}\n" for i in range(9)))
    task = TextClassifyTask(job({"source": "files", "train_path": str(train), "val_path": str(train),
                                 "test_path": str(test)}), run_dir=tmp_path / "r")
    monkeypatch.setattr(text_classify, "COLUMNS", True)
    with pytest.raises(TextDataError, match=r"test\.csv:4: label 'c' does not occur in the training data"):
        run(task.stream_data(), tmp_path / "entry", tmp_path / "work", Options(workers=1))


def test_kept_rows_are_checked_when_read_back(tmp_path, monkeypatch):
    """scan keeps a piece's rows in the scratch folder; encode uses them only if they check out."""
    path = write(tmp_path / "d.csv", "text,label\n" + "\n".join(fixture_rows(400)) + "\n")
    monkeypatch.setattr(base, "PIECE_BYTES", 8000)
    task = TextClassifyTask(job({"source": "files", "path": str(path), "max_length": 5}), run_dir=tmp_path / "r")
    want = prepare(task, tmp_path / "python", False, 1, monkeypatch)
    monkeypatch.setattr(text_classify, "COLUMNS", True)
    stream = task.stream_data()
    stream.scratch = str(tmp_path / "scratch")  # type: ignore[attr-defined]
    pieces = stream.pieces()
    for p in pieces:
        stream.scan(p)
    kept = sorted((tmp_path / "scratch").glob("columns-*.json"))
    assert len(kept) == len(pieces) > 2
    key = stream._token_key(pieces[0])
    rows = table_columns.PieceRows.load(stream._columns_path(pieces[0]), key)
    assert rows is not None and len(rows.lengths[0]) > 0
    ids = tmp_path / "scratch" / "columns-00000.ids.npy"
    np.save(ids, np.full(len(rows.ids[0]), 10**6, np.int32))  # an id past the words: refused
    assert table_columns.PieceRows.load(stream._columns_path(pieces[0]), key) is None
    (tmp_path / "scratch" / "columns-00001.rows.npy").write_bytes(b"\x93NUMPY junk")
    assert table_columns.PieceRows.load(stream._columns_path(pieces[1]), stream._token_key(pieces[1])) is None
    assert table_columns.PieceRows.load(stream._columns_path(pieces[2]), key) is None  # another piece's key
    plan = stream.plan(functools.reduce(base.combine, [stream.scan(p) for p in pieces]))
    for p in pieces[:2]:  # damaged again after the scans kept fresh copies
        (tmp_path / "scratch" / f"columns-{p.index:05d}.rows.npy").write_bytes(b"\x93NUMPY junk")
    out = tmp_path / "e2"
    out.mkdir()
    writer = EntryWriter(out)
    info = stream.info(plan, [stream.encode(p, plan, writer) for p in pieces])
    writer.close()
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(out.iterdir())} == want["files"]
    assert info == want["info"]


def test_a_pieces_blocks_read_on_two_threads_are_read_as_on_one(tmp_path, monkeypatch):
    """read_piece with a side thread (a one-piece stream on a machine with a spare core) gives the
    rows of the serial read: the same local words and labels in the same order, ids, splits and
    labels, over many blocks, rows split by the Python rule among them and a label first met late."""
    rows = fixture_rows(900) + ['"a late label, first seen in the last block",late']
    path = write(tmp_path / "d.csv", "text,label\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(table_columns, "BLOCK_BYTES", 3000)
    task = TextClassifyTask(job({"source": "files", "path": str(path), "max_length": 6}), run_dir=tmp_path / "r")
    stream = task.stream_data()
    (piece,) = stream.pieces()
    got = {}
    for threads in (False, True):
        stream.threads = threads
        read = stream._column_rows(piece)
        assert read is not None and read.reader == "arrow"
        got[threads] = [list(read.words), list(read.labels)] + [a[0].tolist() for a in
                                                                (read.ids, read.lengths, read.splits, read.row_labels)]
    assert got[True] == got[False]
    assert got[True][1][-1] == "late" and len(got[True][0]) > 100
    from lstm_train.data.streams import text_classify

    monkeypatch.setattr(text_classify, "cores", lambda: 2)  # this development machine's count, on any machine
    assert len(stream.pieces()) == 1 and stream.threads is True  # a spare core for the one piece
    monkeypatch.setattr(base, "PIECE_BYTES", 9000)  # more pieces than half the cores: one thread a piece
    assert len(stream.pieces()) > 1 and stream.threads is False


def test_hash_splits_equal_content_split():
    texts = ["a", "caf\u00e9 \U0001F600", "same", "same", "x" * 300]
    labels = ["p", "q", "p", "p", " lab\u00e9l"]
    names = list(dict.fromkeys(labels))
    index = np.array([names.index(x) for x in labels], np.int32)
    for val, test, seed in ((0.3, 0.3, 0), (0.0, 0.5, -7)):
        want = textfiles.content_split(texts, labels, val, test, seed)
        for kind in (pa.string(), pa.large_string()):
            got = table_columns.hash_splits(pa.array(texts, kind), index, names, val, test, seed)
            assert got.tolist() == want.tolist()


PANDAS_FREE = """
import json, sys
from types import SimpleNamespace
from pathlib import Path
from lstm_train.data.streams import text_classify
from lstm_train.data.store.runner import Options, run
data = SimpleNamespace(source="files", path=sys.argv[1], text_column="text", label_column="label", format="auto",
                       encoding="utf-8", val_fraction=0.1, test_fraction=0.1, split_seed=0, tokenizer="words",
                       lowercase=True, min_freq=1, max_vocab=None, max_length=None, root=".", phrases=False,
                       train_labels=None)
stream = text_classify.TextStream(data)
readers = [stream._column_rows(p).reader for p in stream.pieces()]
run(stream, Path(sys.argv[2]) / "entry", Path(sys.argv[2]) / "work", Options(workers=1))
print(json.dumps({"readers": readers, "pandas": "pandas" in sys.modules}))
"""


def test_the_column_path_never_imports_pandas(tmp_path):
    """pyarrow imports pandas (where installed) on its first `pa.array` / `to_numpy`: the column path builds
    and reads its arrays through their buffers (arrow_buffers.py), so a preparing worker pays neither the
    import nor pandas' memory.  Rows split by Arrow and by Python (non-ASCII, U+001C) both run here."""
    import subprocess
    import sys

    path = write(tmp_path / "d.csv", "text,label\n" + "\n".join(fixture_rows(300)) + "\n")
    out = subprocess.run([sys.executable, "-c", PANDAS_FREE, str(path), str(tmp_path)], capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == {"readers": ["arrow"], "pandas": False}


def test_arrow_buffers_read_and_build_arrays_as_pyarrow_does():
    from lstm_train.data.streams import arrow_buffers

    ints = pa.array(np.arange(10, dtype=np.int32)).slice(3, 5)
    flags = pa.array([True, False, True, True, False, False, True, False, True, True]).slice(5, 4)
    assert arrow_buffers.to_numpy(ints).tolist() == ints.to_pylist()
    assert arrow_buffers.to_numpy(flags).tolist() == flags.to_pylist()
    assert arrow_buffers.to_numpy(pa.chunked_array([ints, ints])).tolist() == ints.to_pylist() * 2
    assert arrow_buffers.booleans(np.array([1, 0, 1], bool)).to_pylist() == [True, False, True]
    assert arrow_buffers.integers(np.array([4, 0])).to_pylist() == [4, 0]
    assert arrow_buffers.binaries([b"a", b"", b"\0bc"]).to_pylist() == [b"a", b"", b"\0bc"]
    assert arrow_buffers.empties(2).to_pylist() == [b"", b""]
    assert arrow_buffers.strings("caf\u00e9\n".encode()).to_pylist() == ["caf\u00e9\n"]
    with pytest.raises(pa.ArrowInvalid):
        arrow_buffers.strings(b"ok \xff")


def test_normalize_counts_lowercases_as_the_trainers_normalizer():
    """normalize_counts lower-cases ASCII words in Python: the same words and counts as tokenizers'
    Lowercase on every word (ASCII, non-ASCII whose case maps differ, newline-joined phrases)."""
    from tokenizers import normalizers

    from lstm_train.data.vocab import normalize_counts

    words = ["The", "THE", "the", "I.B.M.", "x\x1cY", "A\nB", "\nC\n", "", "\u0130stanbul", "STRASSE", "\u00c9t\u00c9",
             "\u1e9e", "ABC\n\u0130", "\t"] + [chr(c) for c in range(128)]
    counts = {w: i + 1 for i, w in enumerate(words)}
    lower = normalizers.Lowercase()
    want: dict[str, int] = {}
    for word, n in counts.items():
        for part in lower.normalize_str(word).split("\n"):
            if part:
                want[part] = want.get(part, 0) + n
    assert normalize_counts(counts, True) == want
    assert normalize_counts(counts, False) == {p: sum(n for w, n in counts.items() if p in w.split("\n"))
                                               for w in counts for p in w.split("\n") if p}
