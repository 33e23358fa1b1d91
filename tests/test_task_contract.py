"""The Task contract (`lstm_train.tasks.base`) holds for every task, on tiny generated data:

* the model is built from `Splits.info` alone: info as JSON and the weights as safetensors
  are all a fresh process needs to rebuild it and predict the same lines as the process
  that trained it (no data read, no state carried over);
* no task sets an attribute on itself after `__init__`: every hook, from `load_data` to
  `predict`, leaves `vars(task)` as it was;
* run files go through the one helper: written atomically, refused when edited;
* messages go to stderr: stdout carries `predict`'s lines only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_model

from lstm_train.data import prepared
from lstm_train.config import load_job, validate_job
from lstm_train.tasks import TASKS, get_task
from lstm_train.tasks.base import PredictInputError, RunFileMismatch, Task

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


def tiny_job(name: str, tmp: Path) -> tuple[Any, list[str], dict[str, Any]]:
    """A job of task `name` on generated data in `tmp`, small enough to build in a second, and
    the predict inputs (positional, options) to try it with."""
    data = tmp / "data"
    data.mkdir()
    train = {"mixed_precision": "no", "output_dir": str(tmp / "run")}
    if name == "classify":
        root = make_fake_mnist(data, n_train=64, n_test=32)
        spec = {"data": {"root": str(root)}, "model": {"hidden_size": 8}}
        image = np.zeros((28, 28))
        image[10, 4:24] = 250
        return validate_job({"name": "c", "task": name, **spec, "train": train}, "t"), [png(tmp / "d.png", image)], {}
    if name == "caption":
        root = make_fake_mnist(data, n_train=64, n_test=32)
        job = load_job(str(ROOT / "jobs" / "mnist_caption.yaml"),
                       [f"data.root={root}", "data.num_train=40", "data.num_test=20", "data.max_digits=2",
                        "model.hidden_size=8", "train.mixed_precision=no", f"train.output_dir={tmp / 'run'}"])
        strip = np.zeros((32, 40))  # predict pads or scales a strip to the model's size
        strip[12:20, 4:20] = 250
        return job, [png(tmp / "strip.png", strip)], {}
    if name == "text_classify":
        rows = [f"{'a good' if i % 2 else 'a bad'} film {i},{'pos' if i % 2 else 'neg'}" for i in range(40)]
        (data / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
        spec = {"data": {"source": "files", "path": str(data / "d.csv")},
                "model": {"embedding_dim": 8, "hidden_size": 8}}
        return validate_job({"name": "x", "task": name, **spec, "train": train}, "t"), ["a good film"], \
            {"text": ["a bad film"]}
    if name == "tag":
        (data / "t.conllu").write_text(CONLLU)
        spec = {"data": {"root": str(data), "train": "t.conllu", "val": None, "test": "t.conllu"},
                "model": {"hidden_size": 8, "word_dim": 8, "char_dim": 4, "char_size": 4, "num_layers": 1}}
        return validate_job({"name": "g", "task": name, **spec, "train": train}, "t"), ["the cat runs ."], \
            {"text": ["a dog sleeps ."]}
    if name == "translate":
        rng = np.random.default_rng(0)
        files = {}
        for split, n in (("train", 120), ("val", 20), ("test", 20)):
            src = [" ".join(rng.choice(WORDS, rng.integers(2, 5))) for _ in range(n)]
            (data / f"{split}.src").write_text("\n".join(src) + "\n")
            (data / f"{split}.tgt").write_text("\n".join(" ".join(reversed(s.split())) for s in src) + "\n")
            files[split] = {"source": str(data / f"{split}.src"), "target": str(data / f"{split}.tgt")}
        spec = {"data": {"dataset": "files", "subword": {"vocab_size": 30}, **files},
                "model": {"embed_size": 8, "hidden_size": 8, "num_layers": 1, "decoder_hidden": 8}}
        return validate_job({"name": "l", "task": name, **spec, "train": train}, "t"), ["ka lu mi"], \
            {"text": ["we vo"]}
    if name == "forecast":
        spec = {"data": {"source": "sine", "sine": {"series": 2, "length": 160, "period": 20.0}, "window": 10,
                         "val_size": 20, "test_size": 20, "plot_series": 1, "classical": "none"},
                "model": {"hidden_size": 8, "horizon": 4}}
        return validate_job({"name": "f", "task": name, **spec, "train": train}, "t"), [], {}
    if name == "language_model":
        (data / "corpus.txt").write_text("to be or not to be, the king said.\n" * 40)
        spec = {"data": {"root": str(data), "files": "corpus.txt", "bptt": 8, "batch_size": 2, "eval_streams": 4},
                "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 1}}
        return validate_job({"name": "m", "task": name, **spec, "train": train}, "t"), ["to be or not"], \
            {"text": ["the king"]}
    raise AssertionError(f"no tiny job for task {name}: add one here")


FRESH = """
import json, sys
from pathlib import Path
from safetensors.torch import load_model
from lstm_train.config import validate_job
from lstm_train.tasks import get_task
out = {}
for name, folder in json.loads(sys.argv[1]).items():
    folder = Path(folder)
    saved = json.loads((folder / "saved.json").read_text())
    job = validate_job(saved["job"], "saved job")
    task = get_task(job.task)(job, Path(saved["run_dir"]))
    model = task.build_model(saved["info"])
    load_model(model, folder / "model.safetensors")
    out[name] = task.predict(model.eval(), saved["info"], saved["inputs"], saved["options"])
print(json.dumps(out))
"""


def snapshot(task: Task) -> dict[str, int]:
    return {k: id(v) for k, v in vars(task).items()}


@pytest.mark.usefixtures("one_thread")
def test_every_task_is_built_from_info_alone_and_keeps_no_state(tmp_path: Path, capfd) -> None:
    saved: dict[str, str] = {}
    expected: dict[str, list[str]] = {}
    for name in TASKS:
        tmp = tmp_path / name
        tmp.mkdir()
        job, inputs, options = tiny_job(name, tmp)
        run_dir = Path(job.train.output_dir)
        task = get_task(name)(job, run_dir)
        before = snapshot(task)

        def unchanged(hook: str) -> None:
            assert snapshot(task) == before, f"{name}: {hook} set {sorted(set(vars(task)) - set(before)) or 'attributes'}"

        splits = prepared.load(task)  # the one data path: the store runs the task's stream
        unchanged("load_data")
        info = json.loads(json.dumps(splits.info))
        assert info == splits.info, f"{name}: Splits.info is not plain JSON"
        run_dir.mkdir()
        task.write_run_files(run_dir, info)
        task.write_run_files(run_dir, info)  # a resumed run over the same data: accepted
        unchanged("write_run_files")
        torch.manual_seed(0)
        model = task.build_model(info)
        task.init_weights(model, info)
        unchanged("build_model/init_weights")
        streams = name == "language_model"  # a training batch of a stream task is a window of positions
        batch = task.batch(splits.train, torch.arange(8).reshape(2, 4) if streams else torch.arange(4))
        task.loss(model, batch).backward()
        unchanged("loss")
        model.eval()
        with torch.no_grad():
            sums = task.eval_sums(model, task.batch(splits.test if splits.test is not None else splits.val, torch.arange(4)))
        metrics = task.metrics({k: float(v) for k, v in sums.items()}, prefix="test_")
        assert f"test_{task.primary(info)}" in metrics, name
        assert all(k.startswith("test_") for k in metrics), f"{name}: metric keys {sorted(metrics)}"
        unchanged("eval_sums/metrics")
        extra = task.finish(model, splits, run_dir)
        json.dumps(extra)  # result.json-able: paths as strings
        assert all(isinstance(p, str) for p in extra.get("images", {}).values()), f"{name}: image paths"
        unchanged("finish")
        capfd.readouterr()
        expected[name] = task.predict(model, info, inputs, options)
        assert expected[name] and all(isinstance(line, str) for line in expected[name]), name
        unchanged("predict")
        if name not in ("forecast",):  # every other task refuses a blank input the same way
            blank = ([" "], {}) if name in ("classify", "caption") else ([], {"text": [" "]})
            with pytest.raises(PredictInputError, match="number 1 is empty"):
                task.predict(model, info, *blank)

        folder = tmp / "saved"
        folder.mkdir()
        save_model(model, str(folder / "model.safetensors"))
        (folder / "saved.json").write_text(json.dumps({"job": job.to_dict(), "run_dir": str(run_dir), "info": info,
                                                       "inputs": inputs, "options": options}))
        saved[name] = str(folder)

    # The data is gone: the fresh process has info, weights and run files only.
    for name in TASKS:
        for path in (tmp_path / name / "data").rglob("*"):
            if path.is_file():
                path.unlink()
    fresh = subprocess.run([sys.executable, "-c", FRESH, json.dumps(saved)], capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert json.loads(fresh.stdout) == expected  # stdout: the lines only, nothing else


def test_an_edited_run_file_is_refused_on_resume_and_predict(tmp_path: Path) -> None:
    job, inputs, options = tiny_job("text_classify", tmp_path)
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
