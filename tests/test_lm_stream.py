"""The language model's streamed preparation on real generated files: every tokenizer where the
fraction cut falls inside a word, the same entry from 1 unit or many (local worker processes and
the real SLURM job array), a failed unit publishing nothing and redone alone, bad bytes named,
and memory bounded on a corpus larger than the address space the preparation is allowed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lstm_train.config import load_job
from lstm_train.data.streams import base, language_model
from lstm_train.data.store import entry_format, prepared, runner
from lstm_train.data.streams.language_model import LanguageModelStream
from lstm_train.data.lm_tokenizer import Tokenizer
from lstm_train.tasks.language_model import LanguageModelTask

from .conftest import ROOT, run_cli
from .slurm_helpers import cli

LONG = "incomprehensibilities antidisestablishment thou art my lord café naïve"


def text_file(path: Path, lines: int = 400) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i} {LONG} {'x' * (i % 7)}\n" for i in range(lines)))
    return path


def job_yaml(tmp_path: Path, text: Path, cache: Path, **extra: str) -> Path:
    job = tmp_path / "lm.yaml"
    job.write_text(f"""name: lm_stream_test
task: language_model
data: {{root: {text.parent}, files: {text.name}, bptt: 8, global_batch_size: 4, cache_dir: {cache}}}
model: {{hidden_size: 8, num_layers: 1, embedding_size: 8}}
slurm: {{partition: debug, time_min: 5}}
""")
    return job


def task_of(tmp_path: Path, text: Path, cache: Path, *overrides: str) -> LanguageModelTask:
    return LanguageModelTask(load_job(str(job_yaml(tmp_path, text, cache)), list(overrides)))


def entry_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(folder.glob("*.npy")):
        h.update(file.name.encode() + file.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("tokenizer", ["chars", "bytes", "words", "bpe"])
def test_every_tokenizer_prepares_a_corpus_cut_inside_a_word(tmp_path: Path, tokenizer: str) -> None:
    text = text_file(tmp_path / "data" / "c.txt")
    raw = text.read_bytes()
    # a val_fraction whose byte cut falls in the middle of "incomprehensibilities" on some line
    cut = raw.index(b"incomprehensibilities", len(raw) * 3 // 4) + 5
    fraction = 1 - cut / len(raw)
    task = task_of(tmp_path, text, tmp_path / "cache", f"data.tokenizer={tokenizer}", f"data.val_fraction={fraction}",
                   "data.vocab_size=300")
    splits = prepared.load(task)
    tok = Tokenizer.from_info(splits.info["tokenizer"])
    train = tok.decode(splits.train[0].tolist())
    val_flat = entry_format.map_entry(prepared.locate(task).folder, entry_format.read_manifest(
        prepared.locate(task).folder, prepared.locate(task).key)).val[0]
    val = tok.decode(val_flat.tolist())
    if tokenizer in ("chars", "bytes"):  # nanoGPT's cut: exactly at the byte (ASCII here: the character)
        assert (train + val).encode() == raw and len(train.encode()) == cut
    else:  # moved to the next line: nothing is cut in two, nothing is outside the vocabulary
        assert train.endswith("\n") and splits.test is None
        # the validation part starts with a whole line: its number (unseen in training: <unk> for
        # words), then the long word whole, never a fragment of it
        first = val.split()[:2]
        assert first[1] == "incomprehensibilities" and (first[0] == "<unk>" or first[0].isdigit())
        assert not any(w != "incomprehensibilities" and w in "incomprehensibilities" for w in tok.vocab or [])


def run_stream(stream: LanguageModelStream, out: Path, workers: int) -> str:
    runner.run(stream, out / "entry", out / "work", runner.Options(workers=workers))
    return entry_digest(out / "entry")


def data_section(text: Path, tokenizer: str, **extra: object) -> SimpleNamespace:
    values = dict(root=str(text.parent), files=text.name, val_files=None, test_files=None, split="fraction",
                  val_fraction=0.1, test_fraction=0.05, tokenizer=tokenizer, vocab_size=300, max_vocab=None,
                  bpe_train_bytes=1 << 20, bptt=8)
    return SimpleNamespace(**{**values, **extra})


@pytest.mark.parametrize("tokenizer", ["chars", "words", "bpe"])
def test_the_entry_is_the_same_from_one_unit_or_many(tmp_path: Path, tokenizer: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    text = text_file(tmp_path / "c.txt", lines=3000)
    stream = LanguageModelStream(data_section(text, tokenizer))
    whole = run_stream(stream, tmp_path / "whole", workers=1)
    monkeypatch.setattr(base, "PIECE_BYTES", 8192)
    monkeypatch.setattr(language_model, "BLOCK_BYTES", 1000)
    assert len(stream.pieces()) > 8
    assert run_stream(stream, tmp_path / "inline", workers=1) == whole
    assert run_stream(stream, tmp_path / "pool", workers=2) == whole


class FailingStream(LanguageModelStream):
    """Encoding piece 3 fails while `flag` exists; every piece encoded leaves a mark in `marks`."""

    def __init__(self, data: object, flag: Path, marks: Path) -> None:
        super().__init__(data)
        self.flag, self.marks = flag, marks

    def encode(self, piece, plan, out):  # noqa: ANN001
        if piece.index == 3 and self.flag.exists():
            raise language_model.CorpusError(f"{piece.describe()}: injected failure")
        (self.marks / f"{piece.index}").touch()
        return super().encode(piece, plan, out)


def test_a_failed_unit_publishes_nothing_and_is_redone_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "PIECE_BYTES", 8192)
    text = text_file(tmp_path / "c.txt", lines=3000)
    flag, marks = tmp_path / "fail", tmp_path / "marks"
    flag.touch()
    marks.mkdir()
    stream = FailingStream(data_section(text, "chars"), flag, marks)
    out = tmp_path / "out"
    with pytest.raises(language_model.CorpusError, match="piece 3 .* injected failure"):
        runner.run(stream, out / "entry", out / "work", runner.Options(workers=2))
    assert not (out / "entry").exists()
    done_before = {p.parent.name for p in (out / "work").glob("unit-*/done.json")}
    assert done_before and "unit-00003" not in done_before
    for mark in marks.iterdir():
        mark.unlink()
    flag.unlink()
    runner.run(stream, out / "entry", out / "work", runner.Options(workers=2))
    redone = {int(p.name) for p in marks.iterdir()}
    assert 3 in redone and not redone & {int(n.split("-")[1]) for n in done_before}
    assert entry_digest(out / "entry") == run_stream(LanguageModelStream(data_section(text, "chars")),
                                                     tmp_path / "plain", workers=1)


def test_invalid_utf8_in_a_later_piece_names_file_line_and_offset(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "PIECE_BYTES", 4096)
    text = text_file(tmp_path / "c.txt", lines=2000)
    raw = bytearray(text.read_bytes())
    at = raw.index(b"\n", 30000) + 1
    raw[at:at + 1] = b"\xff"
    text.write_bytes(bytes(raw))
    line = raw[:at].count(b"\n") + 1
    for workers in (1, 2):
        with pytest.raises(language_model.CorpusError, match=rf"{text}:{line}: not UTF-8 text \(byte 0xff at offset {at}\)"):
            run_stream(LanguageModelStream(data_section(text, "words")), tmp_path / f"w{workers}", workers)


def test_one_enormous_line_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(language_model, "MAX_LINE", 1 << 16)
    monkeypatch.setattr(language_model, "BLOCK_BYTES", 1 << 14)
    monkeypatch.setattr(base, "PIECE_BYTES", 1 << 15)
    text = tmp_path / "one-line.txt"
    text.write_text(("word " * 60000).strip())  # 300 kB, no newline at all
    chars = LanguageModelStream(data_section(text, "chars", test_fraction=0.0))
    run_stream(chars, tmp_path / "chars", workers=1)  # cut anywhere between characters
    words = LanguageModelStream(data_section(text, "words", test_fraction=0.0))
    run_stream(words, tmp_path / "words", workers=1)  # cut at spaces past MAX_LINE
    nospace = tmp_path / "nospace.txt"
    nospace.write_text("x" * 200000)
    with pytest.raises(language_model.CorpusError, match=rf"{nospace}: more than 0 MB without"):
        run_stream(LanguageModelStream(data_section(nospace, "words", test_fraction=0.0)), tmp_path / "n", 1)


def test_the_words_vocabulary_is_capped_and_unknown_words_read_as_unk(tmp_path: Path) -> None:
    text = text_file(tmp_path / "c.txt")
    stream = LanguageModelStream(data_section(text, "words", max_vocab=6))
    runner.run(stream, tmp_path / "e", tmp_path / "w", runner.Options(workers=1))
    plan = stream.plan(runner.scan_unit(stream, stream.pieces()))
    assert len(plan["vocab"]) == 6 and {"<unk>", "<eos>"} <= set(plan["vocab"])
    train = np.load(tmp_path / "e" / "train.0.npy")
    assert (train == plan["vocab"].index("<unk>")).any()


MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from types import SimpleNamespace
limit = int(sys.argv[3]) << 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from lstm_train.data.store import runner
from lstm_train.data.streams.language_model import LanguageModelStream
text = Path(sys.argv[1])
data = SimpleNamespace(root=str(text.parent), files=text.name, val_files=None, test_files=None, split="fraction",
                       val_fraction=0.1, test_fraction=0.0, tokenizer=sys.argv[2], vocab_size=300, max_vocab=None,
                       bpe_train_bytes=1 << 20, bptt=8)
out = Path(sys.argv[4])
splits, info = runner.run(LanguageModelStream(data), out / "entry", out / "work", runner.Options(workers=1))
print(splits["train"][0]["shape"][0] + splits["val"][0]["shape"][0])
"""


@pytest.mark.parametrize("tokenizer", ["chars", "words"])
def test_memory_is_bounded_on_a_corpus_larger_than_the_limit(tmp_path: Path, tokenizer: str) -> None:
    """180 MB of text prepared in a process allowed 160 MiB of address space (Python and numpy
    included): it holds a block and the vocabulary, never the corpus."""
    text = tmp_path / "big.txt"
    line = (LONG + " the king shall go\n").encode()
    with open(text, "wb") as f:
        block = line * (4 << 20 // len(line))
        while f.tell() < 180 << 20:
            f.write(block)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "LSTM_TRAIN_BLOCK_BYTES": str(1 << 20)}
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(text), tokenizer, "160", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    per_line = len(line.decode()) if tokenizer == "chars" else len(line.split()) + 1  # words + <eos>
    assert int(proc.stdout.strip()) == per_line * (text.stat().st_size // len(line))


def test_prepare_as_a_slurm_job_array_equals_the_local_entry(tmp_path: Path, cluster: None) -> None:
    text = text_file(tmp_path / "data" / "c.txt", lines=4000)
    env = {**os.environ, "LSTM_TRAIN_PIECE_BYTES": "16384", "PYTHONPATH": str(ROOT)}
    local = cli("prepare", str(job_yaml(tmp_path, text, tmp_path / "local")), "--workers", "1", env=env)
    assert local.returncode == 0, local.stderr
    array = cli("prepare", str(job_yaml(tmp_path, text, tmp_path / "array")), "--executor", "slurm", "--shards", "2",
                env=env, timeout=600)
    assert array.returncode == 0, array.stderr
    assert "as SLURM job array" in array.stderr
    (a,), (b,) = [list(p.glob("language_model-*[0-9a-f]")) for p in (tmp_path / "local", tmp_path / "array")]
    assert entry_digest(a) == entry_digest(b)
    assert not list((tmp_path / "array").glob("*.shards"))  # the work directory went with the publication


def test_a_failing_slurm_shard_names_itself_and_its_log(tmp_path: Path, cluster: None) -> None:
    text = text_file(tmp_path / "data" / "c.txt", lines=4000)
    raw = bytearray(text.read_bytes())
    raw[len(raw) - 100] = 0xFF  # bad bytes in the last shard only
    text.write_bytes(bytes(raw))
    env = {**os.environ, "LSTM_TRAIN_PIECE_BYTES": "16384", "PYTHONPATH": str(ROOT)}
    proc = cli("prepare", str(job_yaml(tmp_path, text, tmp_path / "cache")), "--executor", "slurm", "--shards", "2",
               env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "scan of shard 1" in proc.stderr and "its log: " in proc.stderr and "not UTF-8 text" in proc.stderr
    log = proc.stderr.split("its log: ")[1].split(";")[0].strip()
    assert Path(log).is_file()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("language_model-")
                and not p.name.endswith((".lock", ".shards"))]
