"""The tag and translate tasks' streamed preparations (`Task.stream_data()`) give the entry
`load_data()` gives: every column equal (values, offsets, lengths, dtypes) and the same info,
on the shipped jobs' real corpora (UD_English-EWT, Multi30k) and on small generated files;
bad input keeps load_data's messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lstm_train.config import validate_job
from lstm_train.data.store import prepared, runner
from lstm_train.data.readers.conll import ConllError
from lstm_train.tasks import get_task
from .test_prepared import same_splits
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


def check_same(task, tmp_path: Path, workers: int = 1) -> None:
    """The streamed entry (through the store, `workers` processes) equals load_data's Splits."""
    loaded = task.load_data()
    streamed = prepared.load(task)
    assert same_splits(loaded, streamed)
    if workers > 1:  # the store's pool path: the same entry from other processes
        runner.run(task.stream_data(), tmp_path / "e", tmp_path / "w", runner.Options(workers=workers))


def tag_spec(tmp_path: Path, **data) -> dict:
    return {"name": "t", "task": "tag", "data": {"root": str(tmp_path), "train": "train.conllu",
                                                 "val": "val.conllu", "test": "test.conllu", **data}}


def test_tag_stream_equals_load_data_small(tmp_path: Path) -> None:
    (tmp_path / "train.conllu").write_text(CONLLU * 3, encoding="utf-8")
    (tmp_path / "val.conllu").write_text(CONLLU.replace("PRON", "NEWTAG"), encoding="utf-8")
    (tmp_path / "test.conllu").write_text(CONLLU.replace("Yes", "Nope").replace("INTJ", "OTHER"), encoding="utf-8")
    check_same(task_from(tag_spec(tmp_path), tmp_path / "cache"), tmp_path)


def test_tag_stream_columns_format(tmp_path: Path) -> None:
    text = "-DOCSTART- O\n\nEU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n"
    for name in ("train", "val", "test"):
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    spec = tag_spec(tmp_path, train="train.txt", val="val.txt", test="test.txt")
    task = task_from(spec, tmp_path / "cache")
    check_same(task, tmp_path)
    assert prepared.load(task).info["scheme"] == "bio"


def test_tag_stream_bad_input_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.conllu").write_text(CONLLU, encoding="utf-8")
    (tmp_path / "val.conllu").write_text(CONLLU, encoding="utf-8")
    (tmp_path / "test.conllu").write_text(CONLLU.replace("1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_", "1\tYes\tyes\tINTJ"),
                                          encoding="utf-8")
    task = task_from(tag_spec(tmp_path), tmp_path / "cache")
    with pytest.raises(ConllError, match=r"test.conllu:13: 4 tab-separated columns"):
        task.load_data()
    with pytest.raises(ConllError, match=r"test.conllu:13: 4 tab-separated columns"):
        prepared.load(task)


def test_tag_stream_ud_ewt(tmp_path: Path) -> None:
    if not (DATA / "UD_English-EWT").is_dir():
        pytest.fail(f"{DATA}/UD_English-EWT missing (set LSTM_TRAIN_DATA)")
    check_same(shipped("ud_ewt_upos", tmp_path / "cache"), tmp_path)
