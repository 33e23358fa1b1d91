"""`lstm-train export`: tiny trained runs of classify, text_classify, tag and forecast exported to
ONNX (checked with onnxruntime) and TorchScript; the command's own parity check on the test
split's first batch under 1e-4, outputs of other batch sizes and lengths than the traced ones
(dynamic axes), and the tasks that decode step by step refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lstm_train.cli import load_run
from lstm_train.config import load_job
from lstm_train.export import export as export_loaded
from lstm_train.train import train

from .conftest import ROOT, make_fake_mnist, require, run_cli
from .test_tagging_run import make_ud
from .test_text import sentiment_csv

TINY = ["train.max_steps=6", "tracking.wandb.mode=disabled", "train.mixed_precision=no"]


def tiny_runs(root: Path) -> dict[str, Path]:
    """Four runs of a few steps each, trained in this process (seconds, not a CLI start each)."""
    mnist = make_fake_mnist(root / "mnist", n_train=128, n_test=64)
    reviews = sentiment_csv(root / "reviews.csv", n=120)
    ud = make_ud(root / "ud", n_train=40)
    specs = {
        "classify": ("mnist_lstm", [f"data.root={mnist}", "model.hidden_size=8", "data.eval_batch_size=50",
                                    "model.num_layers=2", "model.bidirectional=true"]),
        "text_classify": ("text_csv_example", [f"data.path={reviews}", "data.text_column=review",
                                               "model.embedding_dim=8", "model.hidden_size=8", "data.batch_size=16"]),
        "tag": ("ud_ewt_upos", [f"data.root={ud}", "model.hidden_size=8", "model.word_dim=8", "model.char_dim=4",
                                "model.char_size=8", "model.num_layers=1", "data.batch_size=8",
                                "data.global_batch_size=8"]),
        # the other shapes of those models: a char BiLSTM with a CRF; last-state pooling, one direction
        "tag_lstm_crf": ("ud_ewt_upos", [f"data.root={ud}", "model.hidden_size=8", "model.word_dim=8",
                                         "model.char_dim=4", "model.char_size=8", "model.num_layers=2",
                                         "model.char_encoder=lstm", "model.crf=true", "data.batch_size=8"]),
        "text_last": ("text_csv_example", [f"data.path={reviews}", "data.text_column=review", "model.pooling=last",
                                           "model.bidirectional=false", "model.num_layers=2",
                                           "model.embedding_dim=8", "model.hidden_size=8", "data.batch_size=16"]),
        "forecast": ("sine_forecast", ["data.sine.series=4", "data.sine.length=300", "data.val_size=40",
                                       "data.test_size=60", "model.hidden_size=8", "model.residual=last"]),
    }
    runs = {}
    for task, (name, overrides) in specs.items():
        runs[task] = root / task
        train(load_job(str(ROOT / "jobs" / f"{name}.yaml"), [*overrides, *TINY, f"train.output_dir={runs[task]}"]))
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield tiny_runs(tmp_path_factory.mktemp("export"))
    finally:
        torch.set_num_threads(before)


def export(run_dir: Path, fmt: str, out: Path):
    return export_loaded(load_run(run_dir), run_dir, fmt, out)


def onnx_session(path: Path):
    try:
        import onnxruntime
    except ImportError:
        require(False, "onnxruntime not installed: pip install -e '.[export]'")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("task", ["classify", "text_classify", "tag", "forecast", "tag_lstm_crf", "text_last"])
def test_onnx_export_matches_pytorch(runs, task, tmp_path):
    out = tmp_path / f"{task}.onnx"
    done = export(runs[task], "onnx", out)
    assert done.path == out and out.is_file() and done.max_abs_diff < 1e-4
    # Traced on the two shortest test samples, checked on the first whole batch: other sizes.
    traced, checked = done.traced_shapes, done.checked_shapes
    first = next(iter(traced))
    assert traced[first][0] == 2 and checked[first][0] > 2
    if task in ("text_classify", "tag", "tag_lstm_crf", "text_last"):
        assert traced[first][1] < checked[first][1]  # the sequence axis is dynamic too
    side = json.loads(done.sidecar.read_text())
    assert side["task"] == {"tag_lstm_crf": "tag", "text_last": "text_classify"}.get(task, task)
    assert side["parity"]["max_abs_diff"] == done.max_abs_diff
    assert side["inputs"][first]["shape"][0] == "batch"
    session = onnx_session(out)
    assert [i.name for i in session.get_inputs()] == list(side["inputs"])


def test_onnx_classify_reads_other_lengths_than_traced(runs, tmp_path):
    """28 rows were traced; 9 rows of 3 images must give what the PyTorch model gives."""
    out = tmp_path / "c.onnx"
    export(runs["classify"], "onnx", out)
    _, _, model, _ = load_run(runs["classify"])
    x = torch.rand(3, 9, 28)
    (got,) = onnx_session(out).run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(got) - model(x)).abs().max() < 1e-4


def test_cli_export_torchscript_and_onnx(runs, tmp_path):
    run = runs["tag"]
    done = run_cli("export", str(run), "--format", "torchscript", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max |exported - PyTorch|" in done.stdout and (run / "model.pt").is_file()
    assert "Warning" not in done.stderr
    scripted = torch.jit.load(str(run / "model.pt"))
    sig = json.loads((run / "model.pt.json").read_text())
    assert sig["outputs"] == ["scores"] and sig["metadata"]["tags"]
    words = torch.tensor([[2, 3, 4]])
    chars = torch.zeros(1, 3, sig["inputs"]["chars"]["shape"][-1], dtype=torch.long)
    chars[..., :3] = 5
    assert scripted(words, chars, torch.tensor([3])).shape == (1, 3, len(sig["metadata"]["tags"]))

    out = tmp_path / "forecast.onnx"
    done = run_cli("export", str(runs["forecast"]), "--format", "onnx", "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.is_file() and str(out) in done.stdout and "Warning" not in done.stderr


def test_export_refusals_exit_2(runs, tmp_path):
    assert run_cli("export", str(tmp_path), "--format", "onnx").returncode == 2  # not a run directory
    config = tmp_path / "translate"
    config.mkdir()
    job = load_job(str(ROOT / "jobs" / "multi30k_en_de.yaml"), [f"train.output_dir={config}"])
    from lstm_train.tasks import get_task

    with pytest.raises(ValueError, match="cannot be exported.*classify, text_classify, tag, forecast"):
        get_task(job.task)(job).export_signature((), {})
    # onnxruntime's LSTM kernel is not torch's: bit-exact parity fails, writes nothing and exits 1.
    out = tmp_path / "never.onnx"
    done = run_cli("export", str(runs["classify"]), "--format", "onnx", "--out", str(out), "--tolerance", "0")
    assert done.returncode == 1 and "nothing written" in done.stderr and not out.exists()
    assert not list(tmp_path.glob(".never.onnx*"))
