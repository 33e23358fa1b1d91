"""`lstm-train bench` runs and reports sane fields.

The bench is a benchmark, not a timed test: nothing here asserts a speed.  (That both data
paths give the same batches is tests/test_batching.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lstm_train.bench import lstm_flops_per_sample, reset_accelerate
from lstm_train.config import validate_job
from lstm_train.tasks.classify import as_rows

try:  # `python -m pytest` from the repo root, or tests/ as a package
    from tests.conftest import run_cli
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from conftest import run_cli  # type: ignore[no-redef]


def classify_job(root: Path, tmp_path: Path, **train: object) -> object:
    return validate_job(
        {
            "name": "bench_test",
            "task": "classify",
            "data": {"dataset": "mnist", "root": str(root), "batch_size": 32},
            "train": {"output_dir": str(tmp_path / "run"), "cpu": True, **train},
            "tracking": {"wandb": {"mode": "disabled"}},
        },
        "test",
    )


# ---------------------------------------------------------------------------
# The bench itself


def test_flop_count_matches_the_issue() -> None:
    # 28 steps x 4 gates x 64 x (28 + 64) multiply-adds, x2 FLOPs, x3 with backward: about 4 MFLOP.
    flops = lstm_flops_per_sample(28, 28, 64, 1, False, 10)
    assert flops == 3 * (2 * 28 * 4 * 64 * (28 + 64) + 2 * 64 * 10)
    assert 3.9e6 < flops < 4.0e6
    # Bidirectional doubles the recurrent work; a second layer reads 2H features.
    two = lstm_flops_per_sample(28, 28, 64, 2, True, 10)
    assert two == 3 * (2 * 2 * 28 * 4 * 64 * (28 + 64) + 2 * 2 * 28 * 4 * 64 * (128 + 64) + 2 * 128 * 10)


def check_loop(report: dict, steps: int, samples: int) -> None:
    assert report["steps"] == steps and report["samples"] == samples
    assert report["epoch_s"] > 0 and report["samples_per_s"] > 0 and report["gflops"] > 0
    assert report["cpu_s"] > 0 and report["samples_per_cpu_s"] > 0 and report["eval_s"] > 0
    assert 0.0 <= report["test_accuracy"] <= 1.0
    assert report["samples_per_s"] == pytest.approx(samples / report["epoch_s"], rel=0.01)


def test_bench_json_reports_both_loops_and_process_scaling(fake_mnist: Path) -> None:
    # fake MNIST: 512 training samples, so 8 steps of 64 per epoch in one process, 4 per rank in two
    proc = run_cli("bench", "--json", "--max-steps", "3", "--processes", env={"LSTM_TRAIN_DATA": str(fake_mnist)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # stdout is one JSON object, the loops' chatter went to stderr
    check_loop(report["tutorial"], 3, 3 * 64)
    check_loop(report["lstm_train"], 3, 3 * 64)
    # Same samples on both sides: the throughput ratio is the epoch-time ratio.
    assert report["speedup"] == pytest.approx(report["tutorial"]["epoch_s"] / report["lstm_train"]["epoch_s"], rel=0.01)
    assert report["speedup_cpu"] == pytest.approx(
        report["lstm_train"]["samples_per_cpu_s"] / report["tutorial"]["samples_per_cpu_s"], rel=0.01)
    assert report["gflops"]["tutorial"] == report["tutorial"]["gflops"] > 0
    assert report["gflops"]["lstm_train"] == report["lstm_train"]["gflops"] > 0
    assert report["threads"] == 1 and report["device"] == "cpu" and report["torch"] == torch.__version__
    assert report["same_settings"] is True and report["flops_per_sample"] == lstm_flops_per_sample(28, 28, 64, 1, False, 10)
    procs = report["processes"]
    assert procs["1"]["world_size"] == 1 and procs["2"]["world_size"] == 2
    check_loop(procs["1"], 3, 3 * 64)
    check_loop(procs["2"], 3, 3 * 64 * 2)  # 64 per process per step
    assert procs["scaling"] > 0
    assert "Epoch [1/1], Step [1/" in proc.stderr  # the tutorial's own log lines


def test_bench_table_with_a_job_file_and_overrides(fake_mnist: Path, tmp_path: Path) -> None:
    job = tmp_path / "wide.yaml"
    job.write_text(f"task: classify\ndata:\n  root: {fake_mnist}\nmodel:\n  hidden_size: 32\n")
    proc = run_cli("bench", str(job), "model.bidirectional=true", "--max-steps", "3", "--repeats", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "tutorial (torchvision + DataLoader)" in out and "lstm_train" in out and "speedup" in out
    assert "settings differ from the tutorial" in out  # hidden 32, bidirectional: not the tutorial's model
    assert "2 repeat(s)" in out and "1 thread(s)" in out


def test_bench_lstm_train_only_with_overrides_and_no_job(fake_mnist: Path) -> None:
    proc = run_cli("bench", "train.mixed_precision=bf16", "--skip-tutorial", "--json", "--max-steps", "4",
                   env={"LSTM_TRAIN_DATA": str(fake_mnist)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["tutorial"] is None and report["speedup"] is None
    assert report["mixed_precision"] == "bf16"
    check_loop(report["lstm_train"], 4, 4 * 64)


def test_bench_refuses_a_non_classify_job(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    forecast = next((p for p in sorted((root / "jobs").glob("*.yaml")) if "task: forecast" in p.read_text()), None)
    if forecast is None:
        pytest.skip("no forecast job file here")
    proc = run_cli("bench", str(forecast), "--max-steps", "1")
    assert proc.returncode == 2 and "classify" in proc.stderr


def test_pixel_by_pixel_sequences(fake_mnist: Path, tmp_path: Path) -> None:
    """`data.sequence: pixels` (jobs/seq_mnist_lstm.yaml): 784 steps of one pixel, and it trains."""
    from lstm_train.bench import job_flops_per_sample
    from lstm_train.config import load_job
    from lstm_train.tasks.classify import as_sequence
    from lstm_train.train import train

    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    pixels = as_sequence(images, "pixels")
    assert pixels.shape == (3, 784, 1)
    assert torch.equal(pixels[:, :, 0], images.reshape(3, 784).float() / 255)
    assert torch.equal(as_sequence(images, "rows"), as_rows(images))

    root = Path(__file__).resolve().parents[1]
    job = load_job(root / "jobs" / "seq_mnist_lstm.yaml", [
        f"data.root={fake_mnist}", "data.batch_size=16", "model.hidden_size=8", "train.max_steps=2",
        f"train.output_dir={tmp_path / 'run'}", "train.cpu=true", "tracking.wandb.mode=disabled",
    ])
    assert job.data.sequence == "pixels" and job.optim.name == "rmsprop" and job.optim.grad_clip == 1.0
    assert job_flops_per_sample(job) == lstm_flops_per_sample(784, 1, 8, 1, False, 10)
    reset_accelerate()
    result = train(job)
    reset_accelerate()
    assert result["steps"] == 2 and 0.0 <= result["test_accuracy"] <= 1.0
    state = torch.load(next((tmp_path / "run" / "checkpoints").glob("*.pt")), weights_only=False)
    assert state["model"]["encoder.lstm.weight_ih_l0"].shape == (4 * 8, 1)  # one pixel per step
