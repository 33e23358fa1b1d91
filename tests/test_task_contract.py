"""The Task contract (`lstm_train.tasks.base`) holds for each built-in task, on tiny generated
data: one parametrized case per built-in task, checked by `lstm_train.testing.check_task`, the
check an author of a task of another package runs too (`lstm-train check-task`,
tests/test_example_task.py):

* the model is built from `Splits.info` alone: info as JSON and the weights as safetensors
  are all a fresh process needs to rebuild it and predict the same lines as the process
  that trained it (no data read, no state carried over);
* no task sets an attribute on itself after `__init__`: every hook, from `load_data` to
  `predict`, leaves `vars(task)` as it was;
* run files go through the one helper: written atomically, refused when edited;
* messages go to stderr: stdout carries `predict`'s lines only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lstm_train.config import load_job, validate_job
from lstm_train.data.store import prepared
from lstm_train.tasks import TASKS, get_task
from lstm_train.tasks.base import RunFileMismatch
from lstm_train.testing import Case, check_task

try:  # `python -m pytest` from the repo root, or tests/ as a package
    from tests.conftest import ROOT, make_fake_mnist
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from conftest import ROOT, make_fake_mnist  # type: ignore[no-redef]

CONLLU = "".join(
    f"# sent_id = s{i}\n1\t{w1}\t_\tDET\t_\t_\t_\t_\t_\t_\n2\t{w2}\t_\tNOUN\t_\t_\t_\t_\t_\t_\n"
    f"3\t{w3}\t_\tVERB\t_\t_\t_\t_\t_\t_\n4\t.\t_\tPUNCT\t_\t_\t_\t_\t_\t_\n\n"
    for i, (w1, w2, w3) in enumerate([("the", "cat", "sleeps"), ("a", "dog", "runs"), ("the", "bird", "sings"),
                                      ("a", "cat", "runs"), ("the", "dog", "sleeps"), ("a", "bird", "runs")] * 3)
)
WORDS = "ka lu mi no pe ra si tu vo we".split()


def png(path: Path, pixels: np.ndarray) -> str:
    from PIL import Image

    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)
    return str(path)


TRAIN = {"mixed_precision": "no"}
TEXT_BLANK = ([], {"text": [" "]})


def job(name: str, tmp: Path, spec: dict[str, Any]) -> Any:
    return validate_job({"name": name[:1], "task": name, **spec, "train": {**TRAIN, "output_dir": str(tmp / "run")}}, "t")


def case_classify(tmp: Path, data: Path) -> Case:
    root = make_fake_mnist(data, n_train=64, n_test=32)
    image = np.zeros((28, 28))
    image[10, 4:24] = 250
    return Case(job("classify", tmp, {"data": {"root": str(root)}, "model": {"hidden_size": 8}}),
                [png(tmp / "d.png", image)], {}, blank=([" "], {}))


def case_caption(tmp: Path, data: Path) -> Case:
    root = make_fake_mnist(data, n_train=64, n_test=32)
    spec = load_job(str(ROOT / "jobs" / "mnist_caption.yaml"),
                    [f"data.root={root}", "data.num_train=40", "data.num_test=20", "data.max_digits=2",
                     "model.hidden_size=8", "train.mixed_precision=no", f"train.output_dir={tmp / 'run'}"])
    strip = np.zeros((32, 40))  # predict pads or scales a strip to the model's size
    strip[12:20, 4:20] = 250
    return Case(spec, [png(tmp / "strip.png", strip)], {}, blank=([" "], {}))


def case_text_classify(tmp: Path, data: Path) -> Case:
    rows = [f"{'a good' if i % 2 else 'a bad'} film {i},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    (data / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    spec = {"data": {"source": "files", "path": str(data / "d.csv")}, "model": {"embedding_dim": 8, "hidden_size": 8}}
    return Case(job("text_classify", tmp, spec), ["a good film"], {"text": ["a bad film"]}, blank=TEXT_BLANK)


def case_tag(tmp: Path, data: Path) -> Case:
    (data / "t.conllu").write_text(CONLLU)
    spec = {"data": {"root": str(data), "train": "t.conllu", "val": None, "test": "t.conllu"},
            "model": {"hidden_size": 8, "word_dim": 8, "char_dim": 4, "char_size": 4, "num_layers": 1}}
    return Case(job("tag", tmp, spec), ["the cat runs ."], {"text": ["a dog sleeps ."]}, blank=TEXT_BLANK)


def case_translate(tmp: Path, data: Path) -> Case:
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 120), ("val", 20), ("test", 20)):
        src = [" ".join(rng.choice(WORDS, rng.integers(2, 5))) for _ in range(n)]
        (data / f"{split}.src").write_text("\n".join(src) + "\n")
        (data / f"{split}.tgt").write_text("\n".join(" ".join(reversed(s.split())) for s in src) + "\n")
        files[split] = {"source": str(data / f"{split}.src"), "target": str(data / f"{split}.tgt")}
    spec = {"data": {"dataset": "files", "subword": {"vocab_size": 30}, **files},
            "model": {"embed_size": 8, "hidden_size": 8, "num_layers": 1, "decoder_hidden": 8}}
    return Case(job("translate", tmp, spec), ["ka lu mi"], {"text": ["we vo"]}, blank=TEXT_BLANK)


def case_forecast(tmp: Path, data: Path) -> Case:
    spec = {"data": {"source": "sine", "sine": {"series": 2, "length": 160, "period": 20.0}, "window": 10,
                     "val_size": 20, "test_size": 20, "plot_series": 1, "classical": "none"},
            "model": {"hidden_size": 8, "horizon": 4}}
    return Case(job("forecast", tmp, spec), [], {})  # no inputs: the end of the data's own series


def case_language_model(tmp: Path, data: Path) -> Case:
    (data / "corpus.txt").write_text("to be or not to be, the king said.\n" * 40)
    spec = {"data": {"root": str(data), "files": "corpus.txt", "bptt": 8, "batch_size": 2, "eval_streams": 4},
            "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 1}}
    return Case(job("language_model", tmp, spec), ["to be or not"], {"text": ["the king"]}, blank=TEXT_BLANK,
                train_indices=torch.arange(8).reshape(2, 4))  # a training batch of streams: a window of positions


def case_sequence(tmp: Path, data: Path) -> Case:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        n = int(rng.integers(3, 9))
        rows += [f"s{i},{t},{rng.normal() + (i % 2)},{rng.normal()},{'up' if i % 2 else 'down'}" for t in range(n)]
    (data / "long.csv").write_text("id,t,a,b,label\n" + "\n".join(rows) + "\n")
    spec = {"data": {"train": str(data / "long.csv"), "id_column": "id", "time_column": "t", "val_fraction": 0.2,
                     "test_fraction": 0.2}, "model": {"hidden_size": 8}}
    return Case(job("sequence", tmp, spec), ["1,0;1.2,0.3;0.9,-0.1"], {}, blank=([" "], {}))


# One tiny job per built-in task (a task of another package brings its own: test_example_task.py).
CASES = {name.removeprefix("case_"): fn for name, fn in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(CASES))
def test_task_is_built_from_info_alone_and_keeps_no_state(name: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    case = CASES[name](tmp_path, tmp_path / "data")
    checked = check_task(replace(case, data_dir=tmp_path / "data"), tmp_path / "check")
    assert checked[-1] == f"{name}: a fresh process predicts the same lines from info and weights alone"


def test_every_built_in_task_has_a_case() -> None:
    assert set(CASES) == set(TASKS)


def test_an_edited_run_file_is_refused_on_resume_and_predict(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    case = case_text_classify(tmp_path, tmp_path / "data")
    job, inputs, options = case.job, case.inputs, case.options
    run_dir = Path(job.train.output_dir)
    task = get_task("text_classify")(job, run_dir)
    info = prepared.load(task).info
    run_dir.mkdir()
    task.write_run_files(run_dir, info)
    assert not list(run_dir.glob(".*.tmp"))  # written through a temporary file, renamed
    model = task.build_model(info).eval()
    assert task.predict(model, info, inputs, options)
    (run_dir / "vocab.json").write_text((run_dir / "vocab.json").read_text().replace("film", "movie"))
    with pytest.raises(RunFileMismatch, match=r"vocab.json: this file \(digest \w+\) is not the one"):
        task.predict(model, info, inputs, options)
    with pytest.raises(RunFileMismatch, match="rebuilt from this job's data"):
        task.write_run_files(run_dir, info)
