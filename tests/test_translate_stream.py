"""The translate task's streamed preparation (data/streams/translate.py) on small generated files:
the entry the in-memory path gave (fixed digests recorded from it), the same entry from one
piece or many in worker processes, a bounded vocabulary sample, and bad parallel text refused
naming the files, the line counts, the line and the byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lstm_train.config import validate_job
from lstm_train.data.streams import translate as translate_stream
from lstm_train.data.store import prepared, runner
from lstm_train.data.streams import base
from lstm_train.data.streams.table_read import RecordEnds
from lstm_train.data.parallel import ParallelDataError
from lstm_train.tasks.translate import TranslateTask

DE = "der die das ein eine Hund Katze läuft springt über den Zaun im Park schnell große kleine".split()
EN = "the a dog cat runs jumps over fence in park quickly big small café naïve".split()

# sha256 of the entry's .npy files (name + bytes) and of its info: "aligned*" recorded from the
# in-memory `load_data` (main at 9c24d50), which the stream gives byte for byte; "split_tsv" from
# the stream (pairs split off by a hash of the key sentence: the in-memory path shuffled every
# distinct key).  A SentencePiece upgrade may change them: check the new entry against an older
# checkout before recording new digests.
FIXED = {
    "aligned": ("010ade32700503ae", "fbb967c9264f1072"),
    "aligned_bpe_lower_skip": ("632e47d6f0a82357", "6ceab334551aef96"),
    "split_tsv": ("207eedf10d4d5bac", "068b0284ae1f8fc0"),
}


def sentence(words: list[str], i: int, n: int) -> str:
    return " ".join(words[(i * 7 + k * k * 3) % len(words)] for k in range(n))


def corpus(folder: Path) -> Path:
    """Line-aligned train/val/test: blank pairs, CRLF (val), a byte-order mark (test), a last line
    without its newline (train), sentences over max_length; and a TSV with a header, alternative
    translations and blank lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 300), ("val", 40), ("test", 40)):
        src, tgt = [], []
        for i in range(n):
            if i % 50 == 7:
                src.append("")
                tgt.append("  ")
                continue
            k = 3 + i % 9
            src.append(sentence(DE, i, k) * (8 if i % 97 == 5 else 1))
            tgt.append(sentence(EN, i + 1, k))
        nl = "\r\n" if split == "val" else "\n"
        bom = "\ufeff" if split == "test" else ""
        (folder / f"{split}.de").write_bytes((bom + nl.join(src) + nl).encode())
        (folder / f"{split}.en").write_bytes((nl.join(tgt) + ("" if split == "train" else nl)).encode())
    rows = ["en\tfr\tsource"]
    for i in range(400):
        english = f"{sentence(EN, i, 3 + i % 5)} {i}"
        rows.append(f"{english}\t{sentence(DE, i, 4)}\tCC-BY {i}")
        if i % 10 == 0:
            rows.append(f"{english}\t{sentence(DE, i + 3, 5)}\tCC-BY alt {i}")
        if i % 77 == 0:
            rows.append("")
    (folder / "pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def aligned(root: Path, **extra: object) -> dict:
    files = {split: {"source": f"{split}.de", "target": f"{split}.en"} for split in ("train", "val", "test")}
    return {"dataset": "files", "root": str(root), **files, "subword": {"vocab_size": 60}, "max_length": 20, **extra}


JOBS = {
    "aligned": lambda root: aligned(root),
    "aligned_bpe_lower_skip": lambda root: aligned(root, subword={"vocab_size": 50, "joint": False, "model": "bpe"},
                                                   lowercase="source", too_long="skip"),
    "split_tsv": lambda root: {
        "dataset": "files", "root": str(root), "train": {"tsv": "pairs.tsv", "header": True, "source_column": "en",
                                                         "target_column": "fr"},
        "val": {"source": "val.en", "target": "val.de"}, "val_fraction": 0.1, "test_fraction": 0.1,
        "subword": {"vocab_size": 50}, "lowercase": "both", "max_length": 12},
}


def task_of(data: dict, cache: Path) -> TranslateTask:
    return TranslateTask(validate_job({"name": "t", "task": "translate", "data": {**data, "cache_dir": str(cache)}},
                                      "test"))


def digests(folder: Path) -> tuple[str, str]:
    h = hashlib.sha256()
    for file in sorted(folder.glob("*.npy")):
        h.update(file.name.encode() + file.read_bytes())
    info = json.loads((folder / "manifest.json").read_text())["info"]
    return h.hexdigest()[:16], hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def entry(task: TranslateTask) -> Path:
    prepared.load(task)
    return prepared.locate(task).folder


@pytest.mark.parametrize("name", sorted(FIXED))
def test_the_entry_is_the_one_the_in_memory_path_gave(tmp_path: Path, name: str) -> None:
    root = corpus(tmp_path / "data")
    assert digests(entry(task_of(JOBS[name](root), tmp_path / "cache"))) == FIXED[name]


def run_digest(stream: translate_stream.TranslateStream, out: Path, workers: int) -> str:
    runner.run(stream, out / "entry", out / "work", runner.Options(workers=workers))
    h = hashlib.sha256()
    for file in sorted((out / "entry").glob("*.npy")):
        h.update(file.name.encode() + file.read_bytes())
    return h.hexdigest()


def test_the_entry_is_the_same_from_one_piece_or_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = corpus(tmp_path / "data")
    for name, make in JOBS.items():
        task = task_of(make(root), tmp_path / "cache")
        whole = run_digest(task.stream_data(), tmp_path / name / "one", 1)
        monkeypatch.setattr(base, "PIECE_BYTES", 700)
        stream = task.stream_data()
        pieces = stream.pieces()
        assert len(pieces) > 10 and len({p.split for p in pieces}) >= 2
        for path in {p.path for p in pieces}:  # cut as every stream is cut: the one cutter, on line ends
            size = Path(path).stat().st_size
            ends = [p.end if p.end is not None else size for p in pieces if p.path == path]
            assert ends == [b for _, b in base.cut(0, size, RecordEnds(Path(path), quoted=False))]
        for p in pieces:  # each piece starts on the same line of both files, the line it names
            src = Path(p.path).read_bytes()
            assert src.count(b"\n", 0, p.start) == p.line - 1
            if p.target is not None:
                assert Path(p.target).read_bytes().count(b"\n", 0, p.target_start) == p.line - 1
        assert run_digest(stream, tmp_path / name / "many", 2) == whole
        monkeypatch.undo()


def test_a_vocabulary_sample_is_bounded_and_a_rule_of_the_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    root = corpus(tmp_path / "data")
    full = task_of(aligned(root), tmp_path / "cache").stream_data()
    monkeypatch.setattr(translate_stream, "SAMPLE_BYTES", 4000)
    sampled = task_of(aligned(root), tmp_path / "cache").stream_data()
    sample = list(sampled._sample(4000 / 20000, "source"))
    assert 0.1 < len(sample) / len(list(full._sample(1.0, "source"))) < 0.35
    one = run_digest(sampled, tmp_path / "one", 1)
    monkeypatch.setattr(base, "PIECE_BYTES", 500)
    assert run_digest(task_of(aligned(root), tmp_path / "cache").stream_data(), tmp_path / "many", 2) == one
    assert "subword vocabulary trained on a sample of" in capsys.readouterr().err


def test_files_of_different_line_counts_are_named_with_where_they_part(tmp_path: Path) -> None:
    root = corpus(tmp_path / "data")
    lines = (root / "train.en").read_text().split("\n")
    (root / "train.en").write_text("\n".join(lines[:120] + lines[121:]))  # line 121 lost: line 122 now empty
    with pytest.raises(ParallelDataError) as e:
        prepared.load(task_of(aligned(root), tmp_path / "cache"))
    assert str(e.value) == (f"{root / 'train.de'} has 300 lines but {root / 'train.en'} has 299: line-aligned files "
                            f"must have one line per sentence pair; they seem to part at line 157, empty in "
                            f"{root / 'train.en'} only")
    (root / "train.en").write_text("\n".join(lines[:250]) + "\n")
    with pytest.raises(ParallelDataError, match=r"has 300 lines but .*train.en has 250: .* line 251 is the first that "
                                                "only one file has"):
        task_of(aligned(root), tmp_path / "cache").stream_data().pieces()


def test_bytes_that_are_not_utf8_are_named_by_file_line_and_offset(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = corpus(tmp_path / "data")
    raw = (root / "train.en").read_bytes()
    at = raw.index(b"caf\xc3\xa9", len(raw) // 2) + 3
    (root / "train.en").write_bytes(raw[:at] + b"\xe9" + raw[at + 2:] + b"\n")  # latin-1, one byte less
    monkeypatch.setattr(base, "PIECE_BYTES", 700)  # the bad byte inside a later piece
    line = raw[:at].count(b"\n") + 1
    with pytest.raises(ParallelDataError, match=rf"train\.en:{line}: not UTF-8 text \(byte 0xe9 at offset {at}\)"):
        prepared.load(task_of(aligned(root), tmp_path / "cache"))


def test_pairs_empty_on_one_side_and_short_tsv_rows_are_named(tmp_path: Path) -> None:
    root = corpus(tmp_path / "data")
    good = (root / "val.en").read_bytes()
    lines = good.split(b"\r\n")
    lines[30] = b" "
    (root / "val.en").write_bytes(b"\r\n".join(lines))
    with pytest.raises(ParallelDataError, match=r"val\.en, line 31: empty line, but line 31 of .*val\.de is not"):
        prepared.load(task_of(aligned(root), tmp_path / "cache"))
    (root / "val.en").write_bytes(good)  # the TSV job below reads it too: one bad file at a time
    (root / "pairs.tsv").write_text("en\tfr\nGo.\tVa !\nHello.\n", encoding="utf-8")
    with pytest.raises(ParallelDataError, match=r"pairs\.tsv, line 3: 1 column \('Hello\.'\)"):
        prepared.load(task_of(JOBS["split_tsv"](root), tmp_path / "cache"))
