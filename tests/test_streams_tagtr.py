"""The tag task's streamed preparation (`Task.stream_data()`) gives the entry recorded from the
in-memory `load_data` it replaced (fixed digests of every column file and of the info), on the
shipped job's real corpus (UD_English-EWT) and on small generated files, from one process or
worker processes; bad input is named by file and line.  (Translate: tests/test_translate_stream.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lstm_train.config import validate_job
from lstm_train.data.store import entry_format, prepared, runner
from lstm_train.data.readers.conll import ConllError
from lstm_train.tasks import get_task
from .test_prepared import entry_digests
from .test_tagging import CONLLU

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LSTM_TRAIN_DATA", "/work/shared/data"))


def task_from(spec: dict, cache: Path):
    spec = {**spec, "data": {**spec["data"], "cache_dir": str(cache)}}
    job = validate_job(spec, "test")
    return get_task(job.task)(job)


def shipped(name: str, cache: Path, **data):
    spec = yaml.safe_load((ROOT / "jobs" / f"{name}.yaml").read_text())
    spec["data"] = {**spec["data"], "root": str(DATA), **data}
    return task_from(spec, cache)


# `entry_digests` recorded from the in-memory load_data (main at 9c24d50), which the stream gave
# column for column (a tokenizers or numpy upgrade may change them: check the new entry against an
# older checkout before recording new digests).
FIXED = {
    "small": ("70918cc9a6745f62", "85cc858efc19f3fa"),
    "columns": ("27fbb036c0a43c42", "79c600202a9c22f5"),
    "ud_ewt": ("b6ae5e005e5ab144", "2477c6eb293beb96"),
}


def check_recorded(task, tmp_path: Path, name: str, workers: int = 1) -> None:
    """The streamed entry (through the store) is the recorded one; with `workers`, also from the
    store's pool of worker processes."""
    prepared.load(task)
    assert entry_digests(prepared.locate(task).folder) == FIXED[name]
    if workers > 1:
        runner.run(task.stream_data(), tmp_path / "e", tmp_path / "w", runner.Options(workers=workers))
        (tmp_path / "e" / entry_format.MANIFEST).write_text((prepared.locate(task).folder / entry_format.MANIFEST).read_text())
        assert entry_digests(tmp_path / "e")[0] == FIXED[name][0]


def tag_spec(tmp_path: Path, **data) -> dict:
    return {"name": "t", "task": "tag", "data": {"root": str(tmp_path), "train": "train.conllu",
                                                 "val": "val.conllu", "test": "test.conllu", **data}}


def test_tag_stream_small_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "train.conllu").write_text(CONLLU * 3, encoding="utf-8")
    (tmp_path / "val.conllu").write_text(CONLLU.replace("PRON", "NEWTAG"), encoding="utf-8")
    (tmp_path / "test.conllu").write_text(CONLLU.replace("Yes", "Nope").replace("INTJ", "OTHER"), encoding="utf-8")
    check_recorded(task_from(tag_spec(tmp_path), tmp_path / "cache"), tmp_path, "small", workers=2)


def test_tag_stream_columns_format(tmp_path: Path) -> None:
    text = "-DOCSTART- O\n\nEU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n"
    for name in ("train", "val", "test"):
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    spec = tag_spec(tmp_path, train="train.txt", val="val.txt", test="test.txt")
    task = task_from(spec, tmp_path / "cache")
    check_recorded(task, tmp_path, "columns")
    assert prepared.load(task).info["scheme"] == "bio"


def test_tag_stream_bad_input_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.conllu").write_text(CONLLU, encoding="utf-8")
    (tmp_path / "val.conllu").write_text(CONLLU, encoding="utf-8")
    (tmp_path / "test.conllu").write_text(CONLLU.replace("1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_", "1\tYes\tyes\tINTJ"),
                                          encoding="utf-8")
    task = task_from(tag_spec(tmp_path), tmp_path / "cache")
    with pytest.raises(ConllError, match=r"test.conllu:13: 4 tab-separated columns"):
        prepared.load(task)


def test_tag_stream_ud_ewt(tmp_path: Path) -> None:
    if not (DATA / "UD_English-EWT").is_dir():
        pytest.fail(f"{DATA}/UD_English-EWT missing (set LSTM_TRAIN_DATA)")
    check_recorded(shipped("ud_ewt_upos", tmp_path / "cache"), tmp_path, "ud_ewt")
