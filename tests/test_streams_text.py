"""text_classify's Stream (data/streams/text_classify.py), run by a serial runner without the store's driver:
the entry is the one recorded from the in-memory path it replaced (fixed digests), a fraction split
by content hash, cuts that never split a quoted field, errors that name file:line/offset, and
bounded memory."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lstm_train.data.streams import base, table_read, table_words, text_classify
from lstm_train.data.streams.base import cut
from lstm_train.data.store.entry_format import EntryWriter
from lstm_train.data.streams.base import Stream
from lstm_train.data.streams.text_classify import TextStream
from lstm_train.data.readers.textfiles import TextDataError
from lstm_train.tasks.text_classify import TextClassifyTask

from .conftest import ROOT, require
from .test_text import job, write


def entry(stream: TextStream, folder: Path, groups: list[list[int]] | None = None) -> tuple[dict, dict]:
    """The stream run serially into `folder` (pieces grouped into shards by `groups`: each shard
    its own writer, concatenated in piece order): {split: (token lists, labels)}, info."""
    pieces = stream.pieces()
    plan = stream.plan(functools.reduce(base.combine, (stream.scan(p) for p in pieces)))
    groups = groups or [list(range(len(pieces)))]
    out: dict[str, tuple[list, list]] = {}
    counts = []
    for g, members in enumerate(groups):
        shard = folder / f"shard-{g}"
        shard.mkdir(parents=True)
        writer = EntryWriter(shard)
        opened: dict = {}
        _share_columns(writer, opened)
        counts += [stream.encode(pieces[i], plan, writer) for i in members]
        for split in writer.close():
            if (shard / f"{split}.0.values.npy").exists():
                prev = out.setdefault(split, ([], [], []))
                for got, name in zip(prev, ("0.values", "0.lengths", "1")):
                    got.append(np.load(shard / f"{split}.{name}.npy"))
    out = {k: tuple(np.concatenate(v).tolist() if len(v) > 1 else v[0].tolist() for v in cols) for k, cols in out.items()}
    return out, stream.info(plan, counts)


def _share_columns(writer: EntryWriter, opened: dict) -> None:
    """One writer shared by a shard's pieces returns the open column again (the store's rule)."""
    ragged, dense = writer.ragged, writer.dense

    def shared(open_column):
        def column(split, i, *args):
            if (split, i) not in opened:
                opened[(split, i)] = open_column(split, i, *args)
            return opened[(split, i)]
        return column

    writer.ragged, writer.dense = shared(ragged), shared(dense)  # type: ignore[method-assign]


def digest(columns: dict) -> str:
    return hashlib.sha256(repr(sorted(columns.items())).encode()).hexdigest()


def digests(columns: dict, info: dict) -> tuple[str, str]:
    """(columns, info) digests of an entry as `entry` gives it, compared with FIXED."""
    import json

    return digest(columns)[:16], hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


# `digests` of entries recorded from the in-memory load_data (main at 9c24d50), which the stream
# gave exactly: the stream must keep giving them (a tokenizers upgrade may change them: check the
# new entry against an older checkout before recording new digests).
FIXED = {
    "sst2": ("4115937476e41917", "77fd93fe1b02cac6"),
    "sst5": ("beba601a0eb194b0", "81161a4ebb6856c2"),
    "files": ("1b9b8b6ffaf67756", "d1d52e03889d9e69"),
    "jsonl": ("8a300addec1a182c", "8b96f73d89e90a0e"),
    "scratch": ("386001ca39223f97", "646c161fc9bf72f1"),
}


def test_stream_is_the_contract(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na b,x\nc d,y\n")
    stream = TextClassifyTask(job({"source": "files", "path": str(path)}), run_dir=tmp_path / "r").stream_data()
    assert isinstance(stream, Stream)
    import pickle

    assert pickle.loads(pickle.dumps(stream)).d == stream.d


@pytest.mark.parametrize("source", ["sst2", "sst5"])
def test_sst_entry_is_the_one_recorded(tmp_path, source):
    root = Path(os.environ.get("LSTM_TRAIN_DATA", ROOT.parent / "shared" / "data"))
    require((root / "SST" / "trees" / "train.txt").is_file(), f"SST trees not found under {root}")
    task = TextClassifyTask(job({"source": source, "root": str(root)}), run_dir=tmp_path / "r")
    assert digests(*entry(task.stream_data(), tmp_path / "e")) == FIXED[source]


def test_files_train_val_test_entry_is_the_one_recorded(tmp_path):
    lines = [f'"{"a good" if i % 3 else "a bad, bad"} film ""{i}"" isn\'t it",{"pos" if i % 2 else "neg"}' for i in range(300)]
    paths = {s: str(write(tmp_path / f"{s}.csv", "text,label\n" + "\n".join(lines[k::3]) + "\n"))
             for k, s in enumerate(("train", "val", "test"))}
    task = TextClassifyTask(job({"source": "files", "train_path": paths["train"], "val_path": paths["val"],
                                 "test_path": paths["test"], "max_length": 5}), run_dir=tmp_path / "r")
    assert digests(*entry(task.stream_data(), tmp_path / "e")) == FIXED["files"]


def many_rows(path: Path, n: int, newline_every: int = 0) -> Path:
    rng = np.random.default_rng(0)
    words = np.array("the a film movie plot good bad great awful story was is".split())
    rows = ["id,text,label"]
    for i in range(n):
        text = " ".join(rng.choice(words, 6))
        if newline_every and i % newline_every == 0:
            text = f'{text}\n"" {text}'
        rows.append(f'{i},"{text}",{"pos" if i % 2 else "neg"}')
    return write(path, "\n".join(rows) + "\n")


def test_fraction_split_by_content_hash_is_independent_of_pieces(tmp_path, monkeypatch):
    path = many_rows(tmp_path / "d.csv", 3000, newline_every=7)
    spec = {"source": "files", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 3}
    task = TextClassifyTask(job(spec), run_dir=tmp_path / "r")
    whole, info = entry(task.stream_data(), tmp_path / "one")
    monkeypatch.setattr(base, "PIECE_BYTES", 4096)
    monkeypatch.setattr(table_read, "BLOCK_BYTES", 1000)
    stream = task.stream_data()
    pieces = stream.pieces()
    assert len(pieces) > 20
    grouped, info2 = entry(stream, tmp_path / "many", [list(range(0, 5)), list(range(5, len(pieces)))])
    assert grouped == whole and info2 == info
    assert [len(whole[s][2]) for s in ("train", "val", "test")] == pytest.approx([2100, 300, 600], rel=0.2)
    # the rule is of the row alone: the same text and label always land in the same split
    a = stream.split_of(["same text"] * 3 + ["other"], ["x"] * 4)
    assert len(set(a[:3].tolist())) == 1
    other_seed = TextStream(job({**spec, "split_seed": 4}).data)
    assert (other_seed.split_of([str(i) for i in range(200)], ["x"] * 200) !=
            stream.split_of([str(i) for i in range(200)], ["x"] * 200)).any()


def test_cuts_fall_outside_quoted_fields(tmp_path):
    path = write(tmp_path / "q.csv", 'text,label\n"a\nb\nc\nd",x\n"e\nf",y\ng,z\n')
    raw = path.read_bytes()
    cuts = [end for _, end in cut(0, len(raw), table_read.RecordEnds(path, quoted=True), size=1)]
    assert cuts == [len(b'text,label\n'), raw.index(b'"e'), raw.index(b"g,z"), len(raw)]


def test_an_empty_split_is_refused(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na b,x\nc d,y\n")
    task = TextClassifyTask(job({"source": "files", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.1}),
                            run_dir=tmp_path / "r")
    with pytest.raises(TextDataError, match="cannot be split into train / val"):
        entry(task.stream_data(), tmp_path / "e")


def test_bad_rows_name_the_file_line_and_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "PIECE_BYTES", 64)
    rows = "text,label\n" + "".join(f"row {i} text,x\n" for i in range(40))
    path = write(tmp_path / "r.csv", rows + "too,many,fields\n")
    stream = TextClassifyTask(job({"source": "files", "path": str(path)}), run_dir=tmp_path / "r").stream_data()
    with pytest.raises(TextDataError, match=rf"r\.csv:42: 3 fields, but the header has 2"):
        [stream.scan(p) for p in stream.pieces()]
    bad = rows.encode() + b"caf\xe9 au lait,x\n"
    write(tmp_path / "u.csv", "")
    (tmp_path / "u.csv").write_bytes(bad)
    stream = TextClassifyTask(job({"source": "files", "path": str(tmp_path / "u.csv")}),
                              run_dir=tmp_path / "r").stream_data()
    with pytest.raises(TextDataError, match=rf"u\.csv:42: not valid utf-8 \(byte 0xe9 at offset {len(rows) + 3}\)"):
        [stream.scan(p) for p in stream.pieces()]


def test_jsonl_pieces_entry_is_the_one_recorded(tmp_path, monkeypatch):
    import json

    lines = [json.dumps({"t": f"text number {i} {'good' if i % 2 else 'bad'}", "y": i % 3}) for i in range(500)]
    paths = {s: str(write(tmp_path / f"{s}.jsonl", "\n".join(lines[k::2]) + "\n")) for k, s in enumerate(("train", "test"))}
    task = TextClassifyTask(job({"source": "files", "train_path": paths["train"], "test_path": paths["test"],
                                 "text_column": "t", "label_column": "y"}), run_dir=tmp_path / "r")
    monkeypatch.setattr(base, "PIECE_BYTES", 1000)
    assert digests(*entry(task.stream_data(), tmp_path / "e")) == FIXED["jsonl"]


def test_memory_bounded_below_the_file(tmp_path):
    """Prepared under an address-space limit of 64 MiB above the interpreter's start: a 13 MB file
    held whole (its text, rows as Python strings, word lists: ~100 MB) would not fit;
    streamed (a 4 MB block, 8192 rows at a time) it fits."""
    rng = np.random.default_rng(0)
    words = np.array("the a film movie plot good bad great awful story was is".split())
    block = "".join(f'"{" ".join(rng.choice(words, 14))} {i}",{"pos" if i % 2 else "neg"}\n' for i in range(2000))
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("text,label\n")
        for _ in range(100):
            f.write(block)
    assert path.stat().st_size > 12 << 20
    script = textwrap.dedent(f"""
        import functools, resource
        from pathlib import Path
        from lstm_train.config import validate_job
        from lstm_train.data.streams import base, text_classify
        from lstm_train.data.store.entry_format import EntryWriter
        spec = {{"name": "t", "task": "text_classify", "model": {{"embedding_dim": 8, "hidden_size": 6}},
                 "data": {{"source": "files", "path": {str(path)!r}}}}}
        stream = text_classify.TextStream(validate_job(spec, "t").data)
        base.PIECE_BYTES = 4 << 20
        out = Path({str(tmp_path / 'out')!r}); out.mkdir()
        writer, opened = EntryWriter(out), {{}}
        ragged, dense = writer.ragged, writer.dense
        writer.ragged = lambda s, i, *a: opened[(s, i)] if (s, i) in opened else opened.setdefault((s, i), ragged(s, i, *a))
        writer.dense = lambda s, i, *a: opened[(s, i)] if (s, i) in opened else opened.setdefault((s, i), dense(s, i, *a))
        Vocab = text_classify.Vocab; Vocab.from_json(Vocab.train([["warm"]]).to_json()).encode_batch([["up"]])
        import pyarrow as pa, pyarrow.csv  # the column path's library mapped (and its threads started) before the limit
        pyarrow.csv.read_csv(pa.BufferReader(b"t,l\\nx y,1\\n"), read_options=pyarrow.csv.ReadOptions(use_threads=False))
        text_classify.table_columns.ascii_tokens(pa.array(["warm up"]), "words")
        floor = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (floor + (64 << 20), resource.RLIM_INFINITY))
        pieces = stream.pieces()  # scanned, planned and encoded in this process, in order
        plan = stream.plan(functools.reduce(base.combine, [stream.scan(p) for p in pieces]))
        info = stream.info(plan, [stream.encode(p, plan, writer) for p in pieces])
        writer.close()
        print("ok", info["vocab_size"])
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "RAYON_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1",
           "ARROW_DEFAULT_MEMORY_POOL": "system"}  # jemalloc reserves address space it never touches
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")


@pytest.mark.parametrize("rule", ["words", "whitespace"])
def test_batch_tokenizer_gives_split_words_and_vocab_ids(rule):
    """The encode fast path (one batched Rust call) equals Vocab.encode_batch(split_words(...))."""
    from lstm_train.config import validate_job
    from lstm_train.data.readers import textfiles
    from lstm_train.data.vocab import Vocab

    texts = ["caf\u00e9 isn't  \u00c9T\u00c9\n ok.. x--y -- \x1c a\x1db", "\u0928\u092e\u0938\u094d\u0924\u0947 \U0001F600 A's",
             "I.B.M. can't won't 3.5 e-mail", "\u0130stanbul STRASSE \u1e9e \u00a0 tab\there"]
    words = textfiles.split_words(texts, rule)
    vocab = Vocab.train(words[:2] + [["e-mail", "can"]])
    fast = table_words.batch_tokenizer(vocab.to_json(), rule)
    clean = [t for t in texts if table_words.exact([t], rule)]
    assert [e.ids for e in fast.encode_batch(clean, add_special_tokens=False)] == vocab.encode_batch(
        textfiles.split_words(clean, rule))
    spec = {"name": "t", "task": "text_classify", "model": {"embedding_dim": 8, "hidden_size": 8},
            "data": {"source": "files", "path": "x.csv", "tokenizer": rule}}
    assert TextStream(validate_job(spec, "t").data)._words(texts) == words


@pytest.mark.parametrize("rule", ["words", "whitespace"])
def test_ascii_path_gives_split_words_and_vocab_ids(rule):
    """ASCII chunks take Python's re and a dict lookup: the same words and ids as the slow path."""
    from lstm_train.data.readers import textfiles
    from lstm_train.data.vocab import Vocab

    texts = ["I.B.M. can't won't 3.5 e-mail... --x-- a_b", "Don't STOP \x1c a\x1db\x0bc\x0cd\te\r\nf", "'s 're O'Neil's ??!",
             "x_y__z 12,000 $5 (a) [b] {c} \"q\" don'tcha"]
    words = textfiles.split_words(texts, rule)
    assert table_words.ascii_words(texts, rule) == words
    for lowercase in (True, False):
        vocab = Vocab.train(words[:2], lowercase=lowercase)
        assert table_words.ascii_ids(words, vocab, lowercase) == vocab.encode_batch(words)


def test_scan_keeps_tokens_that_encode_remaps(tmp_path, monkeypatch):
    """With a scratch folder, scan keeps each piece's local word ids and encode only remaps them:
    the entry is the one read twice from the text; a kept file that is damaged is not used.
    (The Python path's `_Tokens`; the column path's kept rows: tests/test_table_columns.py.)"""
    monkeypatch.setattr(text_classify, "COLUMNS", False)
    path = many_rows(tmp_path / "d.csv", 2000, newline_every=9)
    spec = {"source": "files", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.2, "max_length": 5,
            "lowercase": True}
    task = TextClassifyTask(job(spec), run_dir=tmp_path / "r")
    want, want_info = entry(task.stream_data(), tmp_path / "plain")
    assert digests(want, want_info) == FIXED["scratch"]
    monkeypatch.setattr(base, "PIECE_BYTES", 8192)
    stream = task.stream_data()
    stream.scratch = str(tmp_path / "scratch")  # type: ignore[attr-defined]
    pieces = stream.pieces()
    got, info = entry(stream, tmp_path / "kept", [list(range(0, 3)), list(range(3, len(pieces)))])
    assert got == want and info == want_info
    assert len(list((tmp_path / "scratch").glob("tokens-*.json"))) == len(pieces) > 3
    scan = stream.scan

    def scan_then_damage(piece):
        out = scan(piece)
        (tmp_path / "scratch" / f"tokens-{piece.index:05d}.npy").write_bytes(b"\x93NUMPY junk")
        return out

    stream.scan = scan_then_damage  # type: ignore[method-assign]
    again, _ = entry(stream, tmp_path / "damaged")
    assert again == want
