"""Text classification: SST trees, a user's CSV/TSV/JSONL files, word vectors, the vocabulary
kept with the run, the model's padding invariance, additive metrics and every bad input.

All on small files made here; the real SST is read only where it is present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lstm_train.config import validate_job
from lstm_train.data.readers import sst, textfiles
from lstm_train.data.store import prepared
from lstm_train.data.readers.embeddings import read_vectors
from lstm_train.data.readers.textfiles import TextDataError
from lstm_train.data.vocab import Vocab, VocabError
from lstm_train.models.text import TextClassifier
from lstm_train.tasks.base import PredictInputError, RunFileMismatch
from lstm_train.tasks.text_classify import TextClassifyTask, macro_f1

from .conftest import ROOT, require

TREES = [
    "(3 (2 It) (4 (4 (2 's) (4 (3 (2 a) (4 (3 lovely) (2 film))))) (2 .)))",
    "(1 (2 (2 A) (2 mimetic)) (1 (2 like) (2 (2 -LRB-) (2 (2 8\u00a01\\/2) (2 -RRB-)))))",
    "(2 (2 It) (2 (2 's) (2 film)))",
    "(0 (0 (1 Dreadful) (2 .)) (2 It))",
]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def make_sst(root: Path, trees: list[str] = TREES) -> Path:
    for name in ("train", "dev", "test"):
        write(root / "SST" / "trees" / f"{name}.txt", "\n".join(trees) + "\n")
    return root


def job(data: dict, model: dict | None = None, **sections) -> object:
    spec = {"name": "t", "task": "text_classify", "data": data, "model": model or {"embedding_dim": 8, "hidden_size": 6}}
    spec.update(sections)
    return validate_job(spec, "test")


# ---------------------------------------------------------------------------------- SST


def test_sst_tree_phrases_sentences_and_labels(tmp_path):
    nodes = sst.parse_tree(TREES[1])
    label, words = nodes[-1]
    assert label == 1 and words == ["A", "mimetic", "like", "(", "8\u00a01/2", ")"]  # the no-break space stays inside
    assert all(len(w) == 1 for _, w in nodes[:2])  # leaves first, root last

    path = make_sst(tmp_path) / "SST" / "trees" / "train.txt"
    texts, labels = sst.read_sst(path, 2, phrases=False)
    assert labels == [1, 0, 0]  # the neutral sentence is dropped; 3 -> 1, 1 and 0 -> 0
    texts5, labels5 = sst.read_sst(path, 5, phrases=False)
    assert labels5 == [3, 1, 2, 0] and texts5[2] == ["It", "'s", "film"]
    phrases, phrase_labels = sst.read_sst(path, 5, phrases=True)
    as_text = [" ".join(p) for p in phrases]
    assert len(as_text) == len(set(t.lower() for t in as_text))  # deduplicated ("It" occurs three times)
    assert "It 's a lovely film ." in as_text and "Dreadful ." in as_text
    binary, binary_labels = sst.read_sst(path, 2, phrases=True)
    assert set(binary_labels) == {0, 1} and ["lovely"] in binary and ["film"] not in binary  # neutral phrases out


def test_sst_malformed_tree_names_the_line(tmp_path):
    path = write(tmp_path / "train.txt", TREES[0] + "\n(3 (2 broken) (4 nice)\n")
    with pytest.raises(TextDataError, match=r"train.txt:2: unbalanced"):
        sst.read_sst(path, 2, phrases=True)
    path = write(tmp_path / "bad.txt", "(7 (2 a) (2 b))\n")
    with pytest.raises(TextDataError, match=r"bad.txt:1: a node's label must be 0-4, found '7'"):
        sst.read_sst(path, 5, phrases=False)


def test_real_sst_split_sizes():
    root = Path(os.environ.get("LSTM_TRAIN_DATA", ROOT.parent / "shared" / "data"))
    trees = root / "SST" / "trees"
    require((trees / "train.txt").is_file(), f"SST trees not found under {root}")
    assert len(sst.read_sst(trees / "train.txt", 5, phrases=False)[1]) == 8544
    assert len(sst.read_sst(trees / "train.txt", 2, phrases=False)[1]) == 6920
    assert len(sst.read_sst(trees / "dev.txt", 2, phrases=False)[1]) == 872
    assert len(sst.read_sst(trees / "test.txt", 2, phrases=False)[1]) == 1821
    texts, _ = sst.read_sst(trees / "train.txt", 5, phrases=False)
    assert "8\u00a01/2" in texts[4341]  # train line 4342: one token despite its no-break space


# ---------------------------------------------------------------------------------- own files


def test_csv_tsv_jsonl_with_named_columns(tmp_path):
    csv_path = write(tmp_path / "a.csv", 'id,review,stars\n1,"Great, truly great",pos\n2,awful,neg\n\n3,"two\nlines",pos\n')
    table = textfiles.read_table(csv_path, "review", "stars")
    assert table.texts == ["Great, truly great", "awful", "two\nlines"] and table.labels == ["pos", "neg", "pos"]
    assert table.lines == [2, 3, 5]
    tsv_path = write(tmp_path / "a.tsv", "stars\treview\n5\tfine film\n1\tbad\n")
    assert textfiles.read_table(tsv_path, "review", "stars").labels == ["5", "1"]
    jsonl_path = write(tmp_path / "a.jsonl", '{"t": "ok", "y": 1}\n\n{"t": "no", "y": 0}\n')
    table = textfiles.read_table(jsonl_path, "t", "y")
    assert table.labels == ["1", "0"] and table.lines == [1, 3]
    assert textfiles.label_classes(["10", "9", "2"]) == ["2", "9", "10"]


def test_words_split_like_the_treebank():
    assert textfiles.split_words(["It's not a film I don't like (really)..."]) == [
        ["It", "'s", "not", "a", "film", "I", "do", "n't", "like", "(", "really", ")", "..."]
    ]
    assert textfiles.split_words(["a  b\tc,d"], "whitespace") == [["a", "b", "c,d"]]


@pytest.mark.parametrize(
    "name, content, columns, message",
    [
        ("m.csv", "review,label\nok,1\n", ("text", "label"), r"m.csv:1: no column 'text' \(data.text_column\); the header has: review, label"),
        ("m.csv", "text,y\nok,1\n", ("text", "label"), r"m.csv:1: no column 'label' \(data.label_column\)"),
        ("m.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', ("text", "label"), r"m.jsonl:2: no key 'label' \(keys: text\); set data.label_column"),
        ("e.csv", "text,label\nfine,1\n  ,0\n", ("text", "label"), r"e.csv:3: empty text in column 'text'"),
        ("e.jsonl", '{"text": "", "label": 1}\n', ("text", "label"), r"e.jsonl:1: empty text in column 'text'"),
        ("r.csv", "text,label\nfine,1\nnot, quoted, 0\n", ("text", "label"), r"r.csv:3: 3 fields, but the header has 2 \(text, label\)"),
        ("j.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', ("text", "label"), r"j.jsonl:2: not a JSON object"),
    ],
)
def test_bad_files_name_file_line_and_column(tmp_path, name, content, columns, message):
    path = write(tmp_path / name, content)
    with pytest.raises(TextDataError, match=message):
        textfiles.read_table(path, *columns)


def test_wrong_encoding_names_the_line(tmp_path):
    path = write(tmp_path / "latin.csv", "text,label\nfine,1\ncaf\u00e9 cr\u00e8me,0\n", encoding="latin-1")
    with pytest.raises(TextDataError, match=r"latin.csv:3: not valid utf-8 \(byte 0xe9 .*set data.encoding"):
        textfiles.read_table(path, "text", "label")
    assert textfiles.read_table(path, "text", "label", encoding="latin-1").texts[1] == "caf\u00e9 cr\u00e8me"


def test_unseen_label_at_test_time(tmp_path):
    write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\n")
    write(tmp_path / "test.csv", "text,label\nfine,pos\nmeh,neutral\n")
    task = TextClassifyTask(job({"source": "files", "train_path": str(tmp_path / "train.csv"),
                                 "test_path": str(tmp_path / "test.csv")}))
    with pytest.raises(TextDataError, match=r"test.csv:3: label 'neutral' does not occur in the training data .*known labels: neg, pos"):
        prepared.load(task)


def test_files_need_paths():
    with pytest.raises(ValueError, match="needs data.path, or data.train_path and data.test_path"):
        job({"source": "files"})
    with pytest.raises(ValueError, match="data.path: only for data.source = 'files'"):
        job({"source": "sst2", "path": "x.csv"})


# ---------------------------------------------------------------------------------- vocabulary and vectors


def csv_task(tmp_path: Path, n: int = 60, **data) -> TextClassifyTask:
    rows = [f'"{"a good" if i % 2 else "a bad"} film number {i}",{"pos" if i % 2 else "neg"}' for i in range(n)]
    path = write(tmp_path / "data.csv", "text,label\n" + "\n".join(rows) + "\n")
    return TextClassifyTask(job({"source": "files", "path": str(path), **data}), run_dir=tmp_path / "run")


def test_load_data_columns_and_vocabulary_round_trip(tmp_path, capsys):
    task = csv_task(tmp_path, max_length=4)
    splits = prepared.load(task)
    tokens, labels = splits.train
    n = len(tokens)  # the rows whose content hash falls in train (about 80% of 60)
    assert n == len(labels) and labels.dtype == torch.long and int(tokens.lengths_cpu.max()) == 4
    assert splits.val is not None and n + len(splits.val[1]) + len(splits.test[1]) == 60
    assert f"cut {n} of {n} texts to data.max_length=4 words" in capsys.readouterr().err  # never silently
    info = splits.info
    assert info["classes"] == ["neg", "pos"]
    run = tmp_path / "run"
    run.mkdir()
    task.write_run_files(run, info)
    vocab = Vocab.load(run / "vocab.json")
    assert vocab.digest == info["vocab_digest"] and len(vocab) == info["vocab_size"]
    assert vocab.words(tokens[0].tolist())[2:] == ["film", "number"]  # lower-cased ("a good/bad film number"), cut at 4
    # A resumed run over the same data writes nothing new; over other data (another vocabulary) it
    # refuses, like every task's run files.
    task.write_run_files(run, info)
    again = csv_task(tmp_path / "other", n=10)
    with pytest.raises(RunFileMismatch, match=r"vocab.json: this file \(digest \w+\) is not the one the checkpoint"):
        again.write_run_files(run, prepared.load(again).info)


def untrained_csv_run(tmp_path):
    """A CSV task's data, its run directory's files (vocab.json) and an untrained model."""
    task = csv_task(tmp_path)
    splits = prepared.load(task)
    run = tmp_path / "run"
    run.mkdir()
    task.write_run_files(run, splits.info)
    return task, splits, run, task.build_model(splits.info).eval()


def test_vocabulary_file_that_does_not_match_the_checkpoint(tmp_path):
    task, splits, run, model = untrained_csv_run(tmp_path)
    lines = task.predict(model, splits.info, [], {"text": ["a good film", "a bad film"]})
    assert [line.split("\t")[0] in ("neg", "pos") for line in lines] == [True, True]
    Vocab.train([["other", "words"]]).save(run / "vocab.json")
    with pytest.raises(RunFileMismatch, match=r"run/vocab.json: this file \(digest .*is not the one the checkpoint"):
        task.predict(model, splits.info, [], {"text": ["a good film"]})
    (run / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="vocab.json: missing"):
        task.predict(model, splits.info, [], {"text": ["a good film"]})


def test_predict_file_with_labels_and_unseen_label(tmp_path):
    task, splits, run, model = untrained_csv_run(tmp_path)
    lines_file = write(tmp_path / "lines.txt", "a good film\nthe worst\n")
    out = task.predict(model, splits.info, [], {"file": str(lines_file)})
    assert len(out) == 2 and out[1].endswith("\tthe worst") and 0.5 <= float(out[0].split("\t")[1]) <= 1
    labelled = write(tmp_path / "eval.csv", "text,label\ngood,pos\nbad,neg\n")
    out = task.predict(model, splits.info, [], {"file": str(labelled)})
    assert out[-1].startswith("accuracy ") and "of 2 in" in out[-1]
    unseen = write(tmp_path / "unseen.csv", "text,label\ngood,pos\nhmm,neutral\n")
    with pytest.raises(TextDataError, match=r"unseen.csv:3: label 'neutral' does not occur"):
        task.predict(model, splits.info, [], {"file": str(unseen)})
    with pytest.raises(PredictInputError, match=r"lines2.txt:2: empty line"):
        task.predict(model, splits.info, [], {"file": str(write(tmp_path / "lines2.txt", "ok\n\nfine\n"))})


def test_pretrained_vectors_glove_and_word2vec(tmp_path, capsys):
    vocab = Vocab.train([["good", "bad", "film"]])
    glove = write(tmp_path / "glove.txt", "Good 1 2 3\nfilm 4 5 6\ngood 7 8 9\nunused 0 0 0\n")
    found = read_vectors(glove, vocab, 3)
    good = vocab.encode(["good"])[0]
    assert found.vectors[good].tolist() == [7, 8, 9]  # the exact-case line wins over "Good"
    assert int(found.found.sum()) == 2 and abs(found.coverage - 2 / 3) < 1e-9
    assert "2 of 3 vocabulary words" in found.summary()
    w2v = write(tmp_path / "w2v.txt", "2 3\nbad 1 1 1\nfilm 2 2 2\n")
    assert int(read_vectors(w2v, vocab, 3).found.sum()) == 2

    task = csv_task(tmp_path, n=20)
    task.job.model.embedding_dim = 3
    task.job.model.embeddings.path = str(write(tmp_path / "v.txt", "good 1 1 1\nfilm 2 2 2\n"))
    task.job.model.embeddings.freeze = True
    splits = prepared.load(task)
    model = task.build_model(splits.info)
    task.init_weights(model, splits.info)  # the loop's call, before the optimizer: training only
    assert "embeddings: 2 of" in capsys.readouterr().err
    vocab = Vocab.from_json(splits.info["vocab"])
    assert model.embedding.weight[vocab.encode(["film"])[0]].tolist() == [2, 2, 2]
    assert not model.embedding.weight.requires_grad


@pytest.mark.parametrize(
    "content, message",
    [
        ("good 1 2 3 4\n", r"v.txt:1: vectors of dimension 4, but model.embedding_dim is 3"),
        ("2 5\ngood 1 2 3 4 5\n", r"v.txt:1: vectors of dimension 5, but model.embedding_dim is 3"),
        ("good 1 2 3\nbad 1 2\n", r"v.txt:2: a word and 3 numbers expected, found 3 fields"),
        ("good 1 2 3\nbad 1 x 3\n", r"v.txt:2: not a number among the 3 values of 'bad'"),
    ],
)
def test_bad_embeddings_file(tmp_path, content, message):
    vocab = Vocab.train([["good", "bad"]])
    with pytest.raises(TextDataError, match=message):
        read_vectors(write(tmp_path / "v.txt", content), vocab, 3)


# ---------------------------------------------------------------------------------- model and metrics


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_never_changes_the_logits(pooling, bidirectional):
    torch.manual_seed(0)
    model = TextClassifier(30, 8, 6, 2, 3, bidirectional, 0.3, pooling, 0.2, 0.1).eval()
    texts = [torch.randint(4, 30, (n,)) for n in (5, 1, 9, 3)]
    lengths = torch.tensor([len(t) for t in texts])
    batch = torch.zeros(len(texts), 12, dtype=torch.long)
    for i, t in enumerate(texts):
        batch[i, : len(t)] = t
    together = model(batch, lengths)
    for i, t in enumerate(texts):
        alone = model(t[None], lengths[i : i + 1])
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=1e-5)


def test_eval_sums_are_additive_and_metrics_match(tmp_path):
    task = csv_task(tmp_path, n=80)
    splits = prepared.load(task)
    model = task.build_model(splits.info).eval()
    tokens, labels = splits.train
    idx = torch.arange(len(labels))
    with torch.no_grad():
        whole = task.eval_sums(model, task.batch(splits.train, idx), splits.info)
        halves = [task.eval_sums(model, task.batch(splits.train, part), splits.info) for part in (idx[:20], idx[20:])]
    assert set(whole) == set(halves[0]) == set(halves[1]) and {"confusion_0_1", "confusion_1_0"} <= set(whole)
    for key in whole:
        torch.testing.assert_close(whole[key].double(), halves[0][key].double() + halves[1][key].double())
    metrics = task.metrics({k: float(v) for k, v in whole.items()}, splits.info, prefix="val_")
    cells = {k: float(v) for k, v in whole.items() if k.startswith("confusion_")}
    assert sum(cells.values()) == len(labels) == metrics["val_samples"]
    assert metrics["val_accuracy"] == (cells["confusion_0_0"] + cells["confusion_1_1"]) / len(labels)


def test_macro_f1_by_hand():
    # true 0: 3 right, 1 as class 1; true 1: 2 right; class 2 never seen nor predicted
    matrix = torch.tensor([[3.0, 1, 0], [0, 2, 0], [0, 0, 0]])
    f1_0, f1_1 = 2 * 3 / (3 + 4), 2 * 2 / (3 + 2)
    assert abs(macro_f1(matrix) - (f1_0 + f1_1 + 0) / 3) < 1e-12


def test_finish_writes_confusion_png_and_counts(tmp_path):
    task = csv_task(tmp_path)
    splits = prepared.load(task)
    model = task.build_model(splits.info)
    out = task.finish(model, splits, tmp_path)
    png = Path(out["images"]["confusion_matrix"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    matrix = out["test_confusion_matrix"]["rows_true_columns_predicted"]
    assert sum(map(sum, matrix)) == len(splits.test[1])
    assert sum(c["gold"] for c in out["test_per_class"].values()) == len(splits.test[1])
    assert isinstance(out["images"]["confusion_matrix"], str)
    assert json.dumps(out)  # result.json-able


# ---------------------------------------------------------------------------------- the job, end to end


def sentiment_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    """Short reviews whose label is carried by one of a few sentiment words among filler."""
    import random

    rng = random.Random(seed)
    filler = "the a film movie plot actors story was is and of it this really quite".split()
    good, bad = ["good", "great", "lovely", "superb"], ["bad", "awful", "dull", "boring"]
    rows = ["review,label"]
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.sample(filler, rng.randint(2, 8)) + [rng.choice(good if label == "pos" else bad)]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{label}")
    return write(path, "\n".join(rows) + "\n")


def test_csv_job_trains_predicts_and_refuses_another_vocabulary(tmp_path):
    from .conftest import run_cli

    data = sentiment_csv(tmp_path / "reviews.csv")
    run = tmp_path / "run"
    overrides = [f"data.path={data}", "data.text_column=review", f"train.output_dir={run}", "train.epochs=6",
                 "model.embedding_dim=16", "model.hidden_size=16", "data.batch_size=16", "optim.lr=0.01",
                 "train.mixed_precision=no", "tracking.wandb.mode=disabled"]
    done = run_cli("run", "jobs/text_csv_example.yaml", *overrides, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["test_accuracy"] >= 0.9 and "val_accuracy" in result and "test_macro_f1" in result
    assert (run / "confusion_matrix.png").is_file() and (run / "vocab.json").is_file()

    said = run_cli("predict", str(run), "--text", "a great film", "--text", "dull and boring")
    assert said.returncode == 0, said.stderr
    assert [line.split("\t")[0] for line in said.stdout.splitlines()] == ["pos", "neg"]

    Vocab.train([["another", "vocabulary"]]).save(run / "vocab.json")
    refused = run_cli("predict", str(run), "--text", "a great film")
    assert refused.returncode == 2 and "vocab.json: this file" in refused.stderr


def test_bad_csv_through_the_cli_exits_2(tmp_path):
    from .conftest import run_cli

    data = write(tmp_path / "ragged.csv", "text,label\nfine film,pos\nbad, awful film,neg\n")
    done = run_cli("run", "jobs/text_csv_example.yaml", f"data.path={data}", f"train.output_dir={tmp_path / 'run'}",
                   "tracking.wandb.mode=disabled", timeout=120)
    assert done.returncode == 2
    assert "ragged.csv:3: 3 fields, but the header has 2" in done.stderr and not (tmp_path / "run").exists()


def test_sparse_embeddings_move_only_the_batch_rows_and_resume_exactly():
    from lstm_train.config import OptimConfig
    from lstm_train.optim import SplitOptimizer, make_optimizer, make_scheduler

    def fresh() -> tuple[TextClassifier, SplitOptimizer]:
        torch.manual_seed(0)
        model = TextClassifier(50, 8, 6, 1, 2, sparse_embeddings=True)
        optimizer = make_optimizer(OptimConfig(lr=0.01, scheduler="cosine"), model, torch.device("cpu"))
        return model, optimizer

    def train_step(model, optimizer, scheduler, ids):
        loss = torch.nn.functional.cross_entropy(model(ids, torch.tensor([3, 3])), torch.tensor([0, 1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()

    model, optimizer = fresh()
    assert isinstance(optimizer, SplitOptimizer) and len(optimizer.param_groups) == 2
    optimizer.load_state_dict(optimizer.state_dict())  # as Accelerate's prepare does: new group dicts inside
    scheduler = make_scheduler(OptimConfig(lr=0.01, scheduler="cosine"), optimizer, 10, 5)
    before = model.embedding.weight.detach().clone()
    train_step(model, optimizer, scheduler, torch.tensor([[4, 5, 6], [4, 7, 8]]))
    moved = (model.embedding.weight != before).any(1).nonzero()[:, 0].tolist()
    assert moved == [4, 5, 6, 7, 8]  # only the batch's words
    assert [o.param_groups[0]["lr"] < 0.01 for o in optimizer.optimizers] == [True, True]  # the schedule reaches both

    import copy

    saved_model, saved_opt, saved_sched = copy.deepcopy((model.state_dict(), optimizer.state_dict(),
                                                         scheduler.state_dict()))  # as a checkpoint holds them
    batch = torch.tensor([[9, 5, 10], [11, 4, 12]])
    train_step(model, optimizer, scheduler, batch)
    again, again_opt = fresh()  # the loop's order: optimizer and schedule, then their saved states
    again_sched = make_scheduler(OptimConfig(lr=0.01, scheduler="cosine"), again_opt, 10, 5)
    again.load_state_dict(saved_model)
    again_opt.load_state_dict(saved_opt)
    again_sched.load_state_dict(saved_sched)
    train_step(again, again_opt, again_sched, batch)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_sst2_from_five_way_labels(tmp_path):
    root = make_sst(tmp_path)
    task = TextClassifyTask(job({"source": "sst2", "root": str(root), "train_labels": "fine"}))
    splits = prepared.load(task)
    assert set(splits.train[1].tolist()) == {0, 1, 2, 3, 4}  # neutral phrases train too
    assert splits.test[1].tolist() == [1, 0, 0] and splits.info["classes"] == ["negative", "positive"]
    model = task.build_model(splits.info).eval()
    assert model.head.out_features == 5
    tokens, labels = splits.test
    with torch.no_grad():
        sums = task.eval_sums(model, task.batch(splits.test, torch.arange(3)), splits.info)
        five = model(*task.batch(splits.test, torch.arange(3))[0]).softmax(1)
    positive = (five[:, 3] + five[:, 4] > five[:, 0] + five[:, 1]).long()
    assert sorted(k for k in sums if k.startswith("confusion_")) == [f"confusion_{i}_{j}" for i in (0, 1) for j in (0, 1)]
    assert int(sums["correct"]) == int((positive == labels).sum())
    with pytest.raises(ValueError, match="train_labels = 'fine' is for data.source = 'sst2'"):
        job({"source": "sst5", "train_labels": "fine"})


def test_sparse_embeddings_train_the_same_model_on_one_or_two_processes(tmp_path):
    """fp32, no dropout, one global batch: two processes with sparse embedding gradients
    (all-reduced by the loop, not by DDP's gloo sparse path) end with the weights one process
    trains, and both ranks with the same."""
    from .conftest import accelerate_cli, result_of, run_cli

    # files per split: 224 training rows, 7 whole global batches (a fraction split's train size
    # depends on a hash of each row; a last partial batch is divided unevenly between two ranks)
    train, test = sentiment_csv(tmp_path / "train.csv", 224), sentiment_csv(tmp_path / "test.csv", 32, seed=1)
    common = ["jobs/text_csv_example.yaml", "data.path=null", f"data.train_path={train}", f"data.test_path={test}",
              "data.text_column=review", "train.epochs=2",
              "model.embedding_dim=16", "model.hidden_size=16", "data.batch_size=16", "data.global_batch_size=32",
              "model.sparse_embeddings=true", "model.dropout=0", "model.word_dropout=0", "model.embedding_dropout=0",
              "train.mixed_precision=no", "tracking.wandb.mode=disabled"]
    one, two = tmp_path / "one", tmp_path / "two"
    done = run_cli("run", *common, f"train.output_dir={one}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    done = accelerate_cli(2, "run", *common, f"train.output_dir={two}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result_of(two)["world_size"] == 2 and len(set(result_of(two)["weights_sha1_per_rank"])) == 1
    from lstm_train.checkpoint import checkpoint_files, read_weights

    weights = [read_weights(checkpoint_files(run / "checkpoints")[0][1]) for run in (one, two)]
    difference = max(float((weights[0][k].double() - weights[1][k].double()).abs().max()) for k in weights[0])
    assert difference < 1e-4, difference
