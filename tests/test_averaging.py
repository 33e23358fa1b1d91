"""Averaged weights for evaluation (train.ema, train.ntasgd): evaluated, kept in best/, carried by
checkpoints through a resume bit for bit, and identical on every rank (issue 28 item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch

from lstm_train import checkpoint
from lstm_train.checkpoint import checkpoint_files

from .conftest import accelerate_cli, result_of, resume_inside_an_epoch, run_cli
from .test_language_model import corpus, job_file, plan


def checkpoints(run_dir: Path) -> dict[int, Path]:
    return dict(checkpoint_files(run_dir / "checkpoints"))


def test_ema_is_evaluated_kept_as_best_and_resumes_bit_exactly(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt", lines=300)
    base = {"train.keep_checkpoints": "50", "train.checkpoint_every": "5"}
    args = job_file(tmp_path, text, **base, **{"train.ema": "0.9"})
    steps_per_epoch = plan(n=len(text.read_text()) * 9 // 10).steps_in_epoch(0)
    reference, resumed, mid = resume_inside_an_epoch(args, tmp_path, steps_per_epoch)
    assert reference["evaluated_weights"] == resumed["evaluated_weights"] == "ema 0.9"
    assert resumed["resumed_from_step"] == mid and resumed["steps"] == reference["steps"]
    assert resumed["weights_sha1_per_rank"] == reference["weights_sha1_per_rank"]
    assert resumed["averaged_weights_sha1_per_rank"] == reference["averaged_weights_sha1_per_rank"]
    assert resumed["val_loss"] == reference["val_loss"]

    raw_dir = tmp_path / "raw"
    proc = run_cli("run", *job_file(tmp_path, text, **base), f"train.output_dir={raw_dir}")
    assert proc.returncode == 0, proc.stderr
    raw = result_of(raw_dir)
    assert raw["evaluated_weights"] == "raw" and "averaged_weights_sha1_per_rank" not in raw
    assert raw["val_loss"] != reference["val_loss"]  # the average is what was evaluated
    run = tmp_path / "reference"
    ema_last, raw_last = checkpoints(run)[reference["steps"]], checkpoints(raw_dir)[raw["steps"]]
    trained, untouched = checkpoint.load(ema_last), checkpoint.load(raw_last)
    assert all(torch.equal(trained.model[k], untouched.model[k]) for k in untouched.model)  # training is unchanged
    assert trained.average_meta["kind"] == "ema" and trained.average_meta["count"] == reference["steps"] + 1
    at_best = checkpoint.load(checkpoints(run)[reference["best_step"]])  # saved right after that evaluation
    best = safetensors.torch.load_file(run / "checkpoints" / "best" / "model.safetensors")
    assert at_best.average is not None and set(at_best.average) <= set(best)
    assert all(torch.equal(best[k], at_best.average[k]) for k in at_best.average)
    assert any(not torch.equal(best[k], at_best.model[k]) for k in at_best.average)


def test_ntasgd_starts_averaging_when_validation_stalls(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt", lines=300)
    run = tmp_path / "run"
    # A rate this large (adamw: steps of about lr per weight) makes validation stall within a few evaluations.
    args = job_file(tmp_path, text, **{"train.ntasgd": "true", "train.nonmono": "1", "train.eval_every_steps": "3",
                                       "train.max_steps": "15", "optim.lr": "5", "train.keep_checkpoints": "50"})
    proc = run_cli("run", *args, f"train.output_dir={run}")
    assert proc.returncode == 0, proc.stderr
    assert "NT-ASGD averages the weights from here on" in proc.stdout + proc.stderr
    saved = {step: json.loads((path / "meta.json").read_text()).get("average") for step, path in checkpoints(run).items()}
    start = saved[15]["start"]
    assert start is not None and start % 3 == 0 and saved[15]["count"] == 15 - start + 1
    assert all(saved[s]["start"] is None for s in saved if s < start)  # nothing averaged before the switch
    assert (run / "checkpoints" / f"step-{start:08d}" / "average.safetensors").is_file()
    result = result_of(run)
    assert result["evaluated_weights"] in (f"ntasgd from step {start}", f"raw (ntasgd from step {start})")

    bad = run_cli("run", *args, "train.ema=0.99", f"train.output_dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "train.ntasgd and train.ema" in bad.stderr and "Traceback" not in bad.stderr


def test_two_processes_hold_the_same_average(tmp_path: Path) -> None:
    text = corpus(tmp_path / "data" / "c.txt", lines=300)
    two = tmp_path / "two"
    args = job_file(tmp_path, text, **{"train.max_steps": "10", "data.batch_size": "4", "train.ema": "0.95"})
    proc = accelerate_cli(2, "run", *args, f"train.output_dir={two}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(two)
    assert result["world_size"] == 2 and result["evaluated_weights"] == "ema 0.95"
    first, second = result["averaged_weights_sha1_per_rank"]
    assert first is not None and first == second
    assert len(set(result["weights_sha1_per_rank"])) == 1
