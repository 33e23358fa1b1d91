"""`lstm-train evaluate` for every task family, in each task's own formats: a tiny run trained
through the real CLI, its own test split written (or found) as files of the task's format, then
`evaluate --json` on them must give result.json's test metrics.  Bad input: one line naming the
file, exit 2.  (text_classify: tests/test_evaluate.py, on SST-2; sequence: tests/test_sequence_task.py.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lstm_train.data.readers.idx import read_idx

from .conftest import ROOT, make_fake_mnist, result_of, run_cli
from .test_language_model import corpus, job_file
from .test_tagging_run import SMALL as TAG_SMALL, UPOS_JOB, make_ud
from .test_translate_run import JOB as TRANSLATE_JOB, SMALL as TRANSLATE_SMALL, files as parallel_files

OFF = ["tracking.wandb.mode=disabled", "train.threads=1"]


def trained(*args: str) -> dict:
    """`lstm-train run ARGS` (train.output_dir among them), its result.json."""
    proc = run_cli("run", *args, *OFF, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = next(a.split("=", 1)[1] for a in args if a.startswith("train.output_dir="))
    return result_of(Path(out))


def evaluated(run: Path, *files: Path) -> dict:
    """`lstm-train evaluate RUN FILE... --json`: its metrics."""
    proc = run_cli("evaluate", str(run), *map(str, files), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout)
    assert said["run_dir"] == str(run) and said["files"] == [str(f) for f in files]
    return said["metrics"]


def same(result: dict, metrics: dict, *keys: str) -> None:
    """Each `test_<key>` of result.json equal to evaluate's `<key>` (to float64 rounding)."""
    for key in keys:
        assert metrics[key] == pytest.approx(result[f"test_{key}"], rel=1e-9, abs=1e-12), key


def refused(run: Path, *files: Path) -> str:
    proc = run_cli("evaluate", str(run), *map(str, files))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip()


def test_classify_idx_files_and_image_folders(tmp_path: Path) -> None:
    data, run = make_fake_mnist(tmp_path / "data", n_train=256, n_test=120), tmp_path / "run"
    result = trained(str(ROOT / "jobs" / "mnist_lstm.yaml"), f"data.root={data}", f"train.output_dir={run}",
                     "train.max_steps=15", "model.hidden_size=16")
    raw = data / "MNIST" / "raw"
    images, labels = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
    same(result, evaluated(run, images, labels), "accuracy", "loss", "samples")
    same(result, evaluated(run, labels, images), "accuracy", "loss", "samples")  # either order

    # The same digits as PNG files in class folders: the same images, the same answers.
    folder = tmp_path / "folders"
    for i, (x, y) in enumerate(zip(read_idx(images).numpy(), read_idx(labels).tolist())):
        (folder / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(folder / str(y) / f"{i:04d}.png")
    scored = evaluated(run, folder)
    assert scored["samples"] == 120 and scored["accuracy"] == result["test_accuracy"]
    assert scored["loss"] == pytest.approx(result["test_loss"], rel=1e-4)  # folder order: another batch sum order

    assert refused(run, images) == f"error: {images}: an IDX file needs its partner (images t10k-images-idx3-ubyte " \
        "with labels t10k-labels-idx1-ubyte, given one after the other), or give image folders"
    (folder / "ten").mkdir()
    assert f"{folder / 'ten'}: 'ten' is not a class of the run" in refused(run, folder)


def test_tag_conllu(tmp_path: Path) -> None:
    data, run = make_ud(tmp_path / "data", n_train=80), tmp_path / "run"
    result = trained(UPOS_JOB, f"data.root={data}", f"train.output_dir={run}", "train.max_steps=12", *TAG_SMALL)
    test = data / "UD_English-EWT" / "en_ewt-ud-test.conllu"
    same(result, evaluated(run, test), "accuracy", "loss", "accuracy_unseen", "tokens", "unseen_word_tokens")
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tThe\tthe\tDET\n\n")
    assert refused(run, bad).startswith(f"error: {bad}:1: 4 tab-separated columns, CoNLL-U needs 10")


def test_translate_parallel_text(tmp_path: Path) -> None:
    run = tmp_path / "run"
    keys = parallel_files(tmp_path / "data", n_train=300)
    result = trained(TRANSLATE_JOB, *keys, f"train.output_dir={run}", "train.max_steps=20", *TRANSLATE_SMALL)
    test = tmp_path / "data"
    same(result, evaluated(run, test / "test.src", test / "test.tgt"), "bleu", "chrf", "loss", "sentences")
    tsv = tmp_path / "test.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in zip((test / "test.src").read_text().splitlines(),
                                                         (test / "test.tgt").read_text().splitlines())))
    same(result, evaluated(run, tsv), "bleu", "loss")
    assert "line-aligned files come in pairs" in refused(run, test / "test.src")


def test_caption_strips(tmp_path: Path) -> None:
    from lstm_train.cli import load_run
    from lstm_train.tasks.caption import write_strips

    data, run = make_fake_mnist(tmp_path / "data", n_train=200, n_test=60), tmp_path / "run"
    result = trained(str(ROOT / "jobs" / "mnist_caption.yaml"), f"data.root={data}", f"train.output_dir={run}",
                     "train.max_steps=6", "model.channels=[8,16,16]", "model.hidden_size=16", "model.encoder_hidden=8",
                     "model.embed_size=8", "data.num_train=128", "data.num_test=40", "data.batch_size=32",
                     "data.max_digits=3")
    _, task, _, _ = load_run(run)
    strips = task.strips(train=False)  # the run's own test strips, as the job generates them
    index = write_strips(strips.images, strips.tokens, tmp_path / "strips")
    same(result, evaluated(run, index), "sequence_accuracy", "cer", "loss", "samples")
    index.write_text(index.read_text() + "strip000000.png\t1 2 3 4\n")
    assert refused(run, index) == f"error: {index}:42: '1 2 3 4': need 1 to 3 digits (the run reads strips of 1 to 3 digits)"


def test_forecast_series_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(240)
    values = 100 + 0.3 * t + 10 * np.sin(2 * math.pi * t / 12) + rng.normal(0, 1, len(t))
    series = tmp_path / "series.csv"
    series.write_text("value\n" + "".join(f"{float(v)!r}\n" for v in values))
    run = tmp_path / "run"
    result = trained(str(ROOT / "jobs" / "airline_forecast.yaml"), "data.source=csv", f"data.path={series}",
                     "data.transform=none", "data.classical=none", "data.window=24", "data.val_size=24",
                     "data.test_size=36", "data.season_length=12", f"train.output_dir={run}", "train.max_steps=10",
                     "train.eval_every_epochs=1")
    tail = tmp_path / "tail.csv"  # the test span and the window before it: the run's test windows
    tail.write_text("value\n" + "".join(f"{float(v)!r}\n" for v in values[240 - 36 - 24:]))
    same(result, evaluated(run, tail), "mase", "mae", "rmse", "loss", "windows")
    assert refused(run, series.with_name("nothing.csv")).endswith("no such file (give labelled data files to score)")
    short = tmp_path / "short.csv"
    short.write_text("value\n1\n2\n")
    assert refused(run, short) == f"error: {short}: 2 values; a window of 24 inputs and 12 targets needs at least 36"


def test_language_model_plain_text(tmp_path: Path) -> None:
    from lstm_train.cli import load_run
    from lstm_train.data.streams.language_model import LanguageModelStream

    text, run = corpus(tmp_path / "data" / "c.txt", lines=300), tmp_path / "run"
    args = job_file(tmp_path, text, **{"data.test_fraction": "0.1", "data.eval_streams": "3"})
    result = trained(*args, f"train.output_dir={run}", "train.max_steps=8")
    job, *_ = load_run(run)
    test = tmp_path / "test.txt"  # the corpus' test part, as the run cut it
    with open(text, "rb") as f, open(test, "wb") as out:
        for piece in LanguageModelStream(job.data).pieces():
            if piece.split == "test":
                f.seek(piece.start)
                out.write(f.read(piece.end - piece.start))
    same(result, evaluated(run, test), "loss", "perplexity", "bits_per_token", "tokens")
    odd = tmp_path / "odd.txt"
    odd.write_text("the king shall go to paris\n")
    assert refused(run, odd).startswith(f"error: {odd}")
