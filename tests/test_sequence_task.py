"""The `sequence` task: the user's numeric sequences in every format read alike, normalised from
the training split only, classification and regression trained by `lstm-train run`, scored
again by `evaluate`, and the shipped JapaneseVowels job at or above its published anchor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstm_train.config import validate_job
from lstm_train.data import sequences as seqfiles
from lstm_train.data.sequences import Columns, SequenceDataError
from lstm_train.tasks.sequence import SequenceTask

try:
    from tests.conftest import require, result_of, run_cli
except ImportError:
    from conftest import require, result_of, run_cli  # type: ignore[no-redef]

RNG = np.random.default_rng(0)
SEQS = [RNG.normal(size=(int(RNG.integers(3, 8)), 2)).round(4) for _ in range(12)]
LABELS = ["a" if i % 3 else "b" for i in range(12)]


def write_long(path: Path, seqs: list[np.ndarray], labels: list, shuffle: bool = False) -> Path:
    rows = [(f"s{i}", t, *step, labels[i]) for i, x in enumerate(seqs) for t, step in enumerate(x)]
    if shuffle:  # steps out of order: the time column orders them
        rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    path.write_text("id,time,f0,f1,label\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def same(read: seqfiles.Sequences, seqs: list[np.ndarray], labels: list) -> None:
    assert len(read) == len(seqs) and [str(y) for y in read.y] == [str(y) for y in labels]
    for got, want in zip(read.x, seqs):
        np.testing.assert_allclose(got, want.reshape(len(want), -1))


def test_every_format_reads_the_same_sequences(tmp_path: Path) -> None:
    long = Columns(id="id", time="time")
    same(seqfiles.read(str(write_long(tmp_path / "long.csv", SEQS, LABELS)), long), SEQS, LABELS)
    shuffled = seqfiles.read(str(write_long(tmp_path / "shuffled.csv", SEQS, LABELS, shuffle=True)), long)
    order = [int(i[1:]) for i in shuffled.extra["ids"]]  # sequences in order of first appearance
    assert order != sorted(order)
    same(shuffled, [SEQS[i] for i in order], [LABELS[i] for i in order])
    table = pa.table({"f0": [x[:, 0].tolist() for x in SEQS], "f1": [x[:, 1].tolist() for x in SEQS], "label": LABELS})
    pq.write_table(table, tmp_path / "lists.parquet")
    same(seqfiles.read(str(tmp_path / "lists.parquet"), Columns()), SEQS, LABELS)
    padded = np.full((12, 7, 2), np.nan)
    for i, x in enumerate(SEQS):
        padded[i, : len(x)] = x
    np.savez(tmp_path / "nan.npz", x=padded, y=np.array(LABELS))
    same(seqfiles.read(str(tmp_path / "nan.npz"), Columns()), SEQS, LABELS)
    np.savez(tmp_path / "lengths.npz", x=np.nan_to_num(padded), lengths=[len(x) for x in SEQS], y=np.array(LABELS))
    same(seqfiles.read(str(tmp_path / "lengths.npz"), Columns()), SEQS, LABELS)
    np.save(tmp_path / "x.npy", padded)
    np.save(tmp_path / "y.npy", np.array(LABELS))
    same(seqfiles.read([str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], Columns()), SEQS, LABELS)
    univariate = [x[:, :1] for x in SEQS]  # wide: one row a sequence, shorter ones end in empty cells
    (tmp_path / "wide.csv").write_text("label," + ",".join(f"t{i}" for i in range(7)) + "\n" + "".join(
        f"{y}," + ",".join(str(v) for v in x[:, 0]) + "," * (7 - len(x)) + "\n" for x, y in zip(univariate, LABELS)))
    same(seqfiles.read(str(tmp_path / "wide.csv"), Columns()), univariate, LABELS)
    (tmp_path / "d.ts").write_text("# a comment\n@problemName t\n@classLabel true a b\n@data\n" + "".join(
        ":".join(",".join(str(v) for v in x[:, j]) for j in range(2)) + f":{y}\n" for x, y in zip(SEQS, LABELS)))
    same(seqfiles.read(str(tmp_path / "d.ts"), Columns()), SEQS, LABELS)


def test_bad_files_say_which_file_and_what(tmp_path: Path) -> None:
    path = write_long(tmp_path / "mixed.csv", SEQS[:2], ["a", "b"])
    path.write_text(path.read_text().replace("s1,1,", "s0,9,", 1))  # a step of s1 filed under s0 with label b
    with pytest.raises(SequenceDataError, match=r"mixed.csv: sequence 's0' has more than one label"):
        seqfiles.read(str(path), Columns(id="id", time="time"))
    (tmp_path / "text.csv").write_text("id,f0,label\ns0,high,a\n")
    with pytest.raises(SequenceDataError, match=r"text.csv: column 'f0' is not numbers"):
        seqfiles.read(str(tmp_path / "text.csv"), Columns(id="id"))
    with pytest.raises(SequenceDataError, match=r"nope.npz: no such file"):
        seqfiles.read(str(tmp_path / "nope.npz"), Columns())
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((2, 3)))
    with pytest.raises(SequenceDataError, match=r"nolabels.npz: no labels"):
        seqfiles.read(str(tmp_path / "nolabels.npz"), Columns())
    train = write_long(tmp_path / "train.csv", SEQS, LABELS)
    test = write_long(tmp_path / "test.csv", SEQS[:2], ["a", "zebra"])
    said = run_cli("config", "japanese_vowels_lstm", "data.dataset=null", f"data.train={train}", f"data.test={test}",
                   "data.id_column=id", "data.time_column=time")
    assert said.returncode == 0, said.stderr  # the job is valid; the data is read at run time
    said = run_cli("run", "japanese_vowels_lstm", "data.dataset=null", f"data.train={train}", f"data.test={test}",
                   "data.id_column=id", "data.time_column=time", f"train.output_dir={tmp_path / 'run'}")
    assert said.returncode == 2 and "test.csv: label 'zebra' is not a class of the training data" in said.stderr, \
        said.stderr[-2000:]
    assert "Traceback" not in said.stderr


def job(tmp_path: Path, data: dict, **model) -> object:
    return validate_job({"name": "s", "task": "sequence", "data": data, "model": {"hidden_size": 8, **model},
                         "train": {"output_dir": str(tmp_path / "run")}}, "t")


def test_normalised_by_the_training_split_alone(tmp_path: Path) -> None:
    train = write_long(tmp_path / "train.csv", SEQS, LABELS)
    far = [x * 100 + 1000 for x in SEQS[:3]]  # a test split far away must not move the statistics
    test = write_long(tmp_path / "test.csv", far, LABELS[:3])
    splits = SequenceTask(job(tmp_path, {"train": str(train), "test": str(test), "id_column": "id",
                                         "time_column": "time"})).load_data()
    steps = np.concatenate(SEQS)
    np.testing.assert_allclose(splits.info["feature_mean"], steps.mean(0))
    np.testing.assert_allclose(splits.info["feature_std"], steps.std(0))
    values = splits.train[0].values.numpy()
    np.testing.assert_allclose(values.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(values.std(0), 1, atol=1e-5)
    assert splits.train[0].lengths_cpu.tolist() == [len(x) for x in SEQS]
    assert splits.info["classes"] == ["a", "b"] and splits.train[1].tolist() == [1, 0, 0] * 4


def regression_data(folder: Path, n: int, seed: int) -> Path:
    """Noisy variable-length series whose target (in kilo-units) is their mean level: learnable fast."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        level, length = rng.uniform(-2, 2), int(rng.integers(5, 15))
        rows += [f"q{i},{level + rng.normal(scale=0.3):.4f},{rng.normal():.4f},{1000 * level:.3f}" for _ in range(length)]
    path = folder / f"reg{seed}.csv"
    path.write_text("id,x,noise,target\n" + "\n".join(rows) + "\n")
    return path


def test_regression_trains_and_reports_in_the_targets_units_and_evaluate_agrees(tmp_path: Path) -> None:
    train, test = regression_data(tmp_path, 300, 0), regression_data(tmp_path, 80, 1)
    run = tmp_path / "run"
    proc = run_cli("run", "japanese_vowels_lstm", "data.dataset=null", f"data.train={train}", f"data.test={test}",
                   "data.id_column=id", "data.label_column=target", "data.target=value", "model.hidden_size=16",
                   "model.bidirectional=false", "train.epochs=15", "train.eval_every_epochs=15", "model.head_dropout=0",
                   f"train.output_dir={run}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(run)
    assert result["test_r2"] > 0.9, result
    assert 0 < result["test_rmse"] < 400 and result["test_mae"] <= result["test_rmse"]  # kilo-units, not normalised
    said = run_cli("evaluate", str(run), str(test), "--json")
    assert said.returncode == 0, said.stderr[-2000:]
    scored = json.loads(said.stdout)
    assert scored["primary_metric"] == "r2"
    for key in ("r2", "rmse", "mae", "loss"):
        assert scored["metrics"][key] == pytest.approx(result[f"test_{key}"], rel=1e-6), key
    lines = run_cli("predict", str(run), "0.5,0;0.5,0;0.5,0;0.5,0;0.5,0").stdout.split()
    assert 200 < float(lines[0]) < 800  # about 500: the mean level, in the target's units


def test_japanese_vowels_reaches_its_published_anchor(tmp_path: Path) -> None:
    """The shipped job, as shipped: at or above 1-NN DTW's 0.949 on the archive's own test split."""
    try:
        seqfiles.archive_files("JapaneseVowels", None)
    except SequenceDataError as e:
        require(False, str(e))
    run = tmp_path / "run"
    proc = run_cli("run", "japanese_vowels_lstm", f"train.output_dir={run}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(run)
    assert result["test_samples"] == 370 and result["test_accuracy"] >= 0.949, result
    assert set(result["test_per_class"]) == {str(k) for k in range(1, 10)}
