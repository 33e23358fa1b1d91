"""The Task contract (`lstm_train.tasks.base`) holds for each task, on tiny generated data
(one parametrized case per built-in task; `check_contract` runs it for a task of another
package too: tests/test_example_task.py):

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
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_model

from lstm_train.config import load_job, validate_job
from lstm_train.data import prepared
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


@dataclass
class Case:
    """A task's tiny job for the contract test, and how to try its `predict`."""

    job: Any
    inputs: list[str]
    options: dict[str, Any]
    blank: tuple[list[str], dict[str, Any]] | None = None  # a blank predict input the task refuses
    train_indices: Any = None  # one training batch (default: samples 0-3; a stream task: a window per stream)
    path: list[str] = field(default_factory=list)  # where an outside task's package is imported from


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


FRESH = """
import json, sys
from pathlib import Path
from safetensors.torch import load_model
from lstm_train.config import validate_job
from lstm_train.tasks import get_task
folder = Path(sys.argv[1])
saved = json.loads((folder / "saved.json").read_text())
job = validate_job(saved["job"], "saved job")
task = get_task(job.task)(job, Path(saved["run_dir"]))
model = task.build_model(saved["info"])
load_model(model, folder / "model.safetensors")
print(json.dumps(task.predict(model.eval(), saved["info"], saved["inputs"], saved["options"])))
"""


def snapshot(task: Task) -> dict[str, int]:
    return {k: id(v) for k, v in vars(task).items()}


def check_contract(case: Case, tmp: Path, capfd: Any) -> None:
    """Every hook of the task on its tiny job, in the loop's order, leaves the task as `__init__`
    made it; then a fresh process, from info and weights alone (the data deleted), predicts the
    same lines."""
    job, inputs, options = case.job, case.inputs, case.options
    run_dir = Path(job.train.output_dir)
    task = get_task(job.task)(job, run_dir)
    name, before = task.name, snapshot(task)

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
    indices = torch.arange(4) if case.train_indices is None else case.train_indices
    loss, carry = task.step_loss(model, task.batch(splits.train, indices), {}, info)
    loss.backward()
    assert all(not v.requires_grad for v in carry.values()), f"{name}: carry not detached"
    unchanged("step_loss")
    model.eval()
    with torch.no_grad():
        scored = splits.test if splits.test is not None else splits.val  # a corpus cut in two: val only
        sums = task.eval_sums(model, task.batch(scored, torch.arange(4)), info)
    metrics = task.metrics({k: float(v) for k, v in sums.items()}, info, prefix="test_")
    assert f"test_{task.primary(info)}" in metrics, name
    assert all(k.startswith("test_") for k in metrics), f"{name}: metric keys {sorted(metrics)}"
    reported = task.reported_metrics(info)  # what train.select.metric may name, and which way each is better
    if reported is not None:  # exactly the metrics it reports (counts aside), the primary one its own way
        produced = {k.removeprefix("test_") for k, v in metrics.items() if not isinstance(v, int)}
        assert produced == set(reported), f"{name}: reports {sorted(produced)}, declares {sorted(reported)}"
        assert reported[task.primary(info)] == ("max" if task.higher_is_better else "min"), name
    unchanged("eval_sums/metrics")
    extra = task.finish(model, splits, run_dir)
    json.dumps(extra)  # result.json-able: paths as strings
    assert all(isinstance(p, str) for p in extra.get("images", {}).values()), f"{name}: image paths"
    unchanged("finish")
    capfd.readouterr()
    expected = task.predict(model, info, inputs, options)
    assert expected and all(isinstance(line, str) for line in expected), name
    unchanged("predict")
    if case.blank is not None:  # refused the same way by every task that reads inputs
        with pytest.raises(PredictInputError, match="number 1 is empty"):
            task.predict(model, info, *case.blank)

    folder = tmp / "saved"
    folder.mkdir()
    save_model(model, str(folder / "model.safetensors"))
    (folder / "saved.json").write_text(json.dumps({"job": job.to_dict(), "run_dir": str(run_dir), "info": info,
                                                   "inputs": inputs, "options": options}))
    for path in (tmp / "data").rglob("*"):  # the data is gone: info, weights and run files only
        if path.is_file():
            path.unlink()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*case.path, str(ROOT), os.environ.get("PYTHONPATH", "")])}
    fresh = subprocess.run([sys.executable, "-c", FRESH, str(folder)], capture_output=True, text=True,
                           timeout=300, cwd=ROOT, env=env)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert json.loads(fresh.stdout) == expected  # stdout: the lines only, nothing else


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(CASES))
def test_task_is_built_from_info_alone_and_keeps_no_state(name: str, tmp_path: Path, capfd: Any) -> None:
    (tmp_path / "data").mkdir()
    check_contract(CASES[name](tmp_path, tmp_path / "data"), tmp_path, capfd)


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
