"""The prepared-data store on real files: prepared once, mapped after; every change to an input
prepares again; a damaged entry is never read; concurrent preparations make one entry; Parquet
and `datasets` inputs; the loop trains from mapped data."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lstm_train.config import validate_job
from lstm_train.data.store import entry_format, prepared
from lstm_train.data.readers import textfiles
from lstm_train.data.ragged import Ragged
from lstm_train.data.streams.text_classify import TextStream
from lstm_train.tasks.text_classify import TextClassifyTask

from .conftest import ROOT, accelerate_cli, result_of, run_cli
from .test_diskfull import tmpfs  # noqa: F401  (a real tmpfs, for the full disk)


def write_csv(path: Path, n: int = 80, extra: str = "") -> Path:
    rows = [f'"{"a good" if i % 2 else "a bad"} film number {i} {extra}",{"pos" if i % 2 else "neg"}' for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def spec(path: Path, cache: Path, **data) -> dict:
    return {"name": "t", "task": "text_classify", "model": {"embedding_dim": 8, "hidden_size": 6},
            "data": {"source": "files", "path": str(path), "cache_dir": str(cache), **data}}


def task_of(path: Path, cache: Path, **data) -> TextClassifyTask:
    return TextClassifyTask(validate_job(spec(path, cache, **data), "test"))


def same_splits(a, b) -> bool:
    def same(x, y) -> bool:
        if isinstance(x, Ragged):
            return all(torch.equal(p, q) and p.dtype == q.dtype for p, q in
                       ((x.values, y.values), (x.offsets, y.offsets), (x.lengths_cpu, y.lengths_cpu)))
        return torch.equal(x, y) and x.dtype == y.dtype

    for name in ("train", "val", "test"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and not (len(x) == len(y) and all(map(same, x, y)))):
            return False
    return json.dumps(a.info, sort_keys=True) == json.dumps(b.info, sort_keys=True)


def entry_digests(folder: Path) -> tuple[str, str]:
    """sha256 of an entry's .npy files (name and bytes) and of its manifest's info: what a recorded
    entry is compared by."""
    h = hashlib.sha256()
    for file in sorted(folder.glob("*.npy")):
        h.update(file.name.encode() + file.read_bytes())
    info = json.loads((folder / entry_format.MANIFEST).read_text())["info"]
    return h.hexdigest()[:16], hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_prepared_once_then_mapped_and_equal_to_loading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    loaded = prepared.load(task_of(path, tmp_path / "reference"))  # an entry of its own
    first = prepared.load(task_of(path, cache))
    assert "prepared data: preparing text_classify data into" in capsys.readouterr().err
    second = prepared.load(task_of(path, cache))
    assert "prepared data: mapping " in capsys.readouterr().err
    assert same_splits(loaded, first) and same_splits(loaded, second)
    [entry] = entries(cache)
    # Mapped, not read: the token ids' file is in this process's memory maps.
    maps = Path("/proc/self/maps").read_text()
    assert str(entry / "train.0.values.npy") in maps, maps
    # Batch settings are not part of the data: same entry.
    prepared.load(task_of(path, cache, batch_size=7, bucketing=False))
    assert entries(cache) == [entry]


def test_mapped_columns_stay_mapped_on_any_name_of_the_cpu(tmp_path: Path) -> None:
    """A CPU process group's device is `cpu:0`, and `Tensor.to("cpu:0")` copies a CPU tensor:
    the loop's move of the splits must leave every mapped column where it is (a copy is
    corpus-sized anonymous memory on every rank)."""
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    splits = prepared.load(task_of(path, cache))
    for device in (torch.device("cpu"), torch.device("cpu", 0)):
        moved = splits.to(device)
        for before, after in zip(splits.train + splits.test, moved.train + moved.test):
            pairs = ((before.values, after.values), (before.offsets, after.offsets)) if isinstance(before, Ragged) \
                else ((before, after),)
            assert all(a.data_ptr() == b.data_ptr() for a, b in pairs), device


def test_a_changed_file_or_option_prepares_again(tmp_path: Path) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    prepared.load(task_of(path, cache))
    write_csv(path, extra="again")  # an edited source file
    edited = prepared.load(task_of(path, cache))
    assert len(entries(cache)) == 2
    assert same_splits(edited, prepared.load(task_of(path, tmp_path / "reference")))
    prepared.load(task_of(path, cache, lowercase=False))  # a tokenizer option
    prepared.load(task_of(path, cache, max_length=3))
    assert len(entries(cache)) == 4


@pytest.mark.parametrize("damage", ["truncate", "format", "key", "manifest"])
def test_a_damaged_entry_is_prepared_again_never_read(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      damage: str) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    prepared.load(task_of(path, cache))
    good = prepared.load(task_of(path, tmp_path / "reference"))  # (the mapped copy would see the damage done below)
    [entry] = entries(cache)
    manifest = json.loads((entry / entry_format.MANIFEST).read_text())
    if damage == "truncate":
        values = entry / "train.0.values.npy"
        values.write_bytes(values.read_bytes()[:-40])
    elif damage == "manifest":
        (entry / entry_format.MANIFEST).unlink()
    else:
        manifest[damage] = 0 if damage == "format" else "0" * 32
        (entry / entry_format.MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    again = prepared.load(task_of(path, cache))
    err = capsys.readouterr().err
    assert f"prepared data {entry} is unusable (" in err and "preparing it again" in err, err
    reason = {"truncate": "the header claims", "format": "format version 0", "key": "is not the one of its inputs",
              "manifest": "no manifest.json"}[damage]
    assert reason in err, err
    assert same_splits(good, again) and entries(cache) == [entry]


def test_two_preparations_at_once_make_one_entry(tmp_path: Path) -> None:
    path, cache = write_csv(tmp_path / "d.csv", n=3000), tmp_path / "cache"
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(spec(path, cache)))
    env = {**os.environ, "WANDB_MODE": "disabled"}
    procs = [subprocess.Popen([sys.executable, "-m", "lstm_train", "prepare", str(job)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [(p.communicate(timeout=300), p.returncode) for p in procs]
    assert all(rc == 0 for _, rc in outs), outs
    summaries = [json.loads(out) for (out, _), _ in outs]
    assert sorted(s["prepared_now"] for s in summaries) == [False, True], outs
    assert len({s["path"] for s in summaries}) == 1
    assert [p.name for p in entries(cache)] == [Path(summaries[0]["path"]).name]
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_parquet_and_datasets_inputs(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = write_csv(tmp_path / "d.csv")
    table = textfiles.read_table(csv, "text", "label")
    columns = {"review": table.texts, "stars": table.labels, "id": list(range(len(table)))}
    pq.write_table(pa.table(columns), tmp_path / "d.parquet")
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "d_hf"))
    cache = tmp_path / "cache"
    reference = prepared.load(task_of(csv, tmp_path / "reference"))
    for source, fmt in ((tmp_path / "d.parquet", "auto"), (tmp_path / "d_hf", "auto"), (tmp_path / "d_hf", "hf")):
        read = textfiles.read_table(source, "review", "stars", fmt)
        assert (read.texts, read.labels) == (table.texts, table.labels)
        splits = prepared.load(task_of(source, cache, text_column="review", label_column="stars", format=fmt))
        assert same_splits(reference, splits), source
    with pytest.raises(textfiles.TextDataError, match=r"d.parquet: no column 'body' \(data.text_column\); "
                                                      r"the columns are: review, stars, id"):
        textfiles.read_table(tmp_path / "d.parquet", "body", "stars")


def test_unwritable_cache_dir_names_it(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(prepared.PreparedDataError, match=rf"cannot write prepared data to {blocker}/cache "
                                                         r"\(data.cache_dir\)"):
        prepared.load(task_of(path, blocker / "cache"))


class EditedStream(TextStream):
    """A source file that another process appends to while it is being encoded."""

    def encode(self, piece, plan, out):  # noqa: ANN001, ANN201
        counts = super().encode(piece, plan, out)
        with open(self.d["path"], "a") as f:
            f.write('"late row",pos\n')
        return counts


class EditedWhileReading(TextClassifyTask):
    def stream_data(self) -> EditedStream:
        return EditedStream(self.job.data)


def test_a_source_changed_during_preparation_is_detected(tmp_path: Path) -> None:
    path, cache = write_csv(tmp_path / "d.csv"), tmp_path / "cache"
    with pytest.raises(prepared.PreparedDataError, match=rf"{path} changed while it was being prepared; "
                                                         "nothing was stored"):
        prepared.load(EditedWhileReading(validate_job(spec(path, cache), "test")))
    assert entries(cache) == [] and not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_disk_full_while_preparing_leaves_no_entry(tmp_path: Path, tmpfs: Callable[[str], Path]) -> None:  # noqa: F811
    path = write_csv(tmp_path / "d.csv", n=4000)
    disk = tmpfs("96k")
    disk.chmod(0o755)  # a fresh tmpfs is 1777: a cache others could write to is refused (test_trust)
    with pytest.raises(prepared.PreparedDataError, match=rf"disk full while preparing data in {disk} "
                                                         r"\(data.cache_dir\): nothing was stored"):
        prepared.load(task_of(path, disk))
    assert entries(disk) == [] and not [p for p in disk.iterdir() if p.name.startswith(".tmp-")]


def test_runs_train_from_mapped_data_with_identical_results(tmp_path: Path) -> None:
    """1 process (prepares), 1 process again (maps): the same result; 2 processes from a fresh
    store (rank 0 prepares, rank 1 waits, both map)."""
    path = write_csv(tmp_path / "d.csv", n=400)
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({**spec(path, tmp_path / "cache"), "train": {"max_steps": 6, "epochs": 1},
                               "tracking": {"wandb": {"mode": "disabled"}}}))
    results, logs = [], []
    for name in ("a", "b"):
        p = run_cli("run", str(job), f"train.output_dir={tmp_path / name}")
        assert p.returncode == 0, p.stdout + p.stderr
        results.append(result_of(tmp_path / name))
        logs.append(p.stderr)
    assert "prepared data: preparing" in logs[0] and "prepared data: mapping" in logs[1], logs
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
    assert results[0]["test_loss"] == results[1]["test_loss"]
    p = accelerate_cli(2, "run", str(job), f"train.output_dir={tmp_path / 'ddp'}", f"data.cache_dir={tmp_path / 'c2'}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.count("prepared data: preparing") == 1, p.stderr
    assert "test_accuracy" in result_of(tmp_path / "ddp")
