"""The loop's promises across processes and restarts, on real torch.distributed processes.

- the same job on 1 or 2 processes (or with gradient accumulation) at the same global
  batch ends with the same weights, and resumes at another world size;
- ranks decide from what they hold in memory, never from what each sees on a shared
  filesystem (a rank with a different view of the checkpoint folder must not hang);
- model selection: the best weights on validation data are kept, tested once, and early
  stopping ends a run that stopped improving;
- a run stopped and resumed reports the training time of all its parts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lstm_train import checkpoint
from lstm_train.checkpoint import BEST, checkpoint_files

from .conftest import ROOT, accelerate_cli, free_port, make_fake_mnist, require, result_of, run_cli

JOB = str(ROOT / "jobs" / "mnist_lstm.yaml")
SINE = str(ROOT / "jobs" / "sine_forecast.yaml")


def newest(run_dir: Path) -> checkpoint.Checkpoint:
    (_, path), *_ = checkpoint_files(run_dir / "checkpoints")
    return checkpoint.load(path)


def max_difference(a: Path, b: Path) -> float:
    wa, wb = newest(a).model, newest(b).model
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def test_same_global_batch_same_weights_on_one_or_two_processes(fake_mnist: Path, tmp_path: Path) -> None:
    """fp32, no dropout: 1 process x 2 micro-batches, 2 processes x 1, and 1 x 1 train the same
    model; a run started on 1 process and resumed on 2 too (its ranks then draw their own
    random streams)."""
    common = [JOB, f"data.root={fake_mnist}", "data.global_batch_size=64", "train.mixed_precision=no", "train.epochs=2",
              "train.max_steps=16", "train.log_every=4"]
    runs = {name: tmp_path / name for name in ("accum", "ddp", "plain", "resumed")}
    proc = run_cli("run", *common, "data.batch_size=32", f"train.output_dir={runs['accum']}")
    assert proc.returncode == 0, proc.stderr
    assert result_of(runs["accum"])["grad_accum_steps"] == 2
    proc = accelerate_cli(2, "run", *common, "data.batch_size=32", f"train.output_dir={runs['ddp']}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result_of(runs["ddp"])["world_size"] == 2 and result_of(runs["ddp"])["grad_accum_steps"] == 1
    assert run_cli("run", *common, f"train.output_dir={runs['plain']}").returncode == 0

    # 8 steps on one process, then on to 16 on two (as a requeue onto another allocation would).
    first = run_cli("run", *common[:-2], "train.max_steps=8", f"train.output_dir={runs['resumed']}")
    assert first.returncode == 0, first.stderr
    (runs["resumed"] / "result.json").unlink()
    proc = accelerate_cli(2, "run", *common, f"train.output_dir={runs['resumed']}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = result_of(runs["resumed"])
    assert resumed["resumed_from_step"] == 8 and resumed["world_size"] == 2 and resumed["steps"] == 16
    rngs = [r["rng"] for r in newest(runs["resumed"]).per_rank]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])  # not rank 0's stream twice

    differences = {name: max_difference(runs["plain"], runs[name]) for name in ("accum", "ddp", "resumed")}
    print(f"max |weight difference| vs 1 process x 1 micro-batch: {differences}")
    assert all(d < 1e-4 for d in differences.values()), differences  # measured: about 5e-6 (Adam, 16 steps)


def run_rank_1_with_another_view(view: Path, folder: Path, *args: str) -> tuple[list[subprocess.Popen], list[str]]:
    """Run `lstm-train run *args` as a 2-rank torch.distributed group in which rank 1 sees
    `view` in place of `folder` (its own mount namespace, listing the folder first): an NFS
    client whose cache differs from the other's.  Returns the processes and their outputs."""
    cmd = [sys.executable, "-m", "lstm_train", "run", *args, "tracking.wandb.mode=disabled"]
    port, procs = str(free_port()), []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "WANDB_MODE": "disabled",
               "LSTM_TRAIN_COLLECTIVE_TIMEOUT_S": "60"}
        full = cmd if rank == 0 else ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                      f'mount --bind "{view}" "{folder}" && ls "{folder}" && exec "$@"', "sh", *cmd]
        procs.append(subprocess.Popen(full, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    return procs, outputs


def test_ranks_that_see_different_checkpoint_listings_do_not_hang(fake_mnist: Path, tmp_path: Path) -> None:
    """Rank 1 runs in its own mount namespace where the checkpoint folder shows a (broken)
    checkpoint of the final step that rank 0 does not see: an NFS client with a stale
    attribute cache.  Whether to save at the end is decided from memory, so both ranks make
    the same collectives and the run ends."""
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "root and unshare (mount namespaces)")
    run_dir, view = tmp_path / "run", tmp_path / "rank1-view"
    (run_dir / "checkpoints").mkdir(parents=True)
    view.mkdir()
    (view / "step-00000012").mkdir()  # written by another client, not yet complete everywhere
    (view / "step-00000012" / "model.safetensors").write_bytes(b"written by another client")
    procs, outputs = run_rank_1_with_another_view(
        view, run_dir / "checkpoints", JOB, f"data.root={fake_mnist}", "train.epochs=3", f"train.output_dir={run_dir}",
        "train.checkpoint_every=1000")
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "step-00000012" in outputs[1]  # rank 1 did see the broken checkpoint
    assert result_of(run_dir)["steps"] == 12 and [s for s, _ in checkpoint_files(run_dir / "checkpoints")] == [12]


def test_best_weights_on_validation_data_and_early_stopping(tmp_path: Path) -> None:
    """Forecasting with a validation span: evaluation on it picks best/ by the task's
    primary metric (MASE, lower is better); a run that stops improving stops early; the
    test split is evaluated once, at the end, with the best weights."""
    common = [SINE, "data.sine.series=6", "data.sine.length=300", "data.val_size=0.15", "data.test_size=0.15",
              "model.hidden_size=16", "data.batch_size=32", "data.plot_series=1"]
    out = tmp_path / "selected"
    proc = run_cli("run", *common, "train.epochs=3", f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    result = result_of(out)
    assert result["primary_metric"] == "test_mase" and result["higher_is_better"] is False
    assert {"val_mase", "test_mase", "val_loss", "test_loss"} <= result.keys()
    best = checkpoint.load_best(out / "checkpoints")
    assert best.step == result["best_step"] and best.value == result["val_mase"]
    rows = [json.loads(line) for line in (out / "metrics" / "rank-0.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "val/mase" in r]) == 3  # one per epoch
    assert len([r for r in rows if "test/mase" in r]) == 1  # tested once

    # SGD with a learning rate below float32's resolution cannot change a weight: the second
    # evaluation is no better than the first, and patience 1 stops the run there.  The two tie
    # exactly (MASE and loss): the tie rule keeps the later step.
    stuck = tmp_path / "stuck"
    proc = run_cli("run", *common, "train.epochs=10", "optim.name=sgd", "optim.lr=1e-30",
                   "train.early_stopping.patience=1", f"train.output_dir={stuck}")
    assert proc.returncode == 0, proc.stderr
    result = result_of(stuck)
    per_epoch, second = val_steps(stuck)
    assert result["stopped_early"] is True and second == result["steps"] == 2 * per_epoch
    assert result["best_step"] == second and result["val_mase"] == checkpoint.load_best(stuck / "checkpoints").value
    assert "early stopping at step" in proc.stdout


def test_a_stopped_and_resumed_run_counts_every_part(fake_mnist: Path, tmp_path: Path) -> None:
    """Stopped (SIGTERM) late in the run and resumed: result.json's training time is the whole
    run's, the final checkpoint's total, not the short second part's."""
    out = tmp_path / "run"
    args = [JOB, f"data.root={fake_mnist}", "train.epochs=40", "train.checkpoint_every=20", "train.log_every=5",
            f"train.output_dir={out}"]  # 320 steps
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "lstm_train", "run", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(s >= 280 for s, _ in checkpoint_files(out / "checkpoints")):
        assert proc.poll() is None and time.time() < deadline, "run ended before step 280"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "run the same command again to resume" in err
    stopped = newest(out)
    assert not (out / "result.json").exists() and 280 <= stopped.step < 320
    first_part = stopped.train_seconds  # >= 7/8 of the training

    resumed = run_cli("run", *args)
    assert resumed.returncode == 0, resumed.stderr
    result, final = result_of(out), newest(out)
    assert result["parts"] == 2 and result["resumed_from_step"] == stopped.step and final.step == 320
    assert result["train_seconds"] == round(final.train_seconds, 3) > first_part


def test_a_data_set_smaller_than_the_world(tmp_path: Path) -> None:
    """Three processes, two training images and one test image: the training set is padded to
    one sample per rank, two ranks have no test batch at all, and the run still ends with one
    model and every test sample counted once."""
    root = make_fake_mnist(tmp_path / "data", n_train=2, n_test=1)
    out = tmp_path / "run"
    proc = accelerate_cli(3, "run", JOB, f"data.root={root}", "train.epochs=2", f"train.output_dir={out}",
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(out)
    assert result["world_size"] == 3 and result["steps"] == 2 and result["test_samples"] == 1
    assert len(set(result["weights_sha1_per_rank"])) == 1


SELECTED = [SINE, "data.sine.series=6", "data.sine.length=300", "data.val_size=0.15", "data.test_size=0.15",
            "model.hidden_size=16", "data.batch_size=32", "data.plot_series=1", "data.classical=none"]


def val_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics" / "rank-0.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "val/mase" in r]


def test_a_nan_is_caught_before_an_epoch_end_evaluation_saves_it(tmp_path: Path) -> None:
    """Validation at each epoch end writes a checkpoint.  A NaN loss between logging steps must
    stop the run there, before that checkpoint: the newest checkpoint stays a good one."""
    out = tmp_path / "r"
    # SGD at 0.1, then x1e30 per epoch: NaN in the second epoch; logs and checkpoints far apart.
    proc = run_cli("run", *SELECTED, "train.epochs=4", "train.log_every=1000", "train.checkpoint_every=1000",
                   "train.keep_checkpoints=10", "optim.name=sgd", "optim.lr=0.1", "optim.scheduler=step",
                   "optim.gamma=1e30", f"train.output_dir={out}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "loss is" in proc.stderr
    kept = checkpoint_files(out / "checkpoints")
    assert kept
    for _, path in kept:
        weights = checkpoint.read_weights(path)
        assert all(torch.isfinite(t).all() for t in weights.values()), f"{path.name} holds non-finite weights"


def test_a_checkpoint_at_an_evaluation_step_holds_the_evaluations_outcome(tmp_path: Path) -> None:
    """SGD that cannot move (lr below float resolution), patience 2, evaluations and checkpoints
    every 4 steps: evaluations at 4 (best), 8, 12 stop the run at 12.  Resumed from the
    checkpoint of step 8 (as after a crash), it must stop at 12 too: that checkpoint holds
    the evaluation of step 8, not the state before it."""
    out = tmp_path / "r"
    args = [*SELECTED, "train.epochs=10", "optim.name=sgd", "optim.lr=1e-30", "train.early_stopping.patience=2",
            "train.eval_every_steps=4", "train.checkpoint_every=4", "train.keep_checkpoints=10",
            f"train.output_dir={out}"]
    proc = run_cli("run", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result_of(out)["steps"] == 12 and result_of(out)["stopped_early"] is True
    assert checkpoint.load(out / "checkpoints" / "step-00000008").loop.evals_since_best == 1

    (out / "result.json").unlink()
    shutil.rmtree(out / "checkpoints" / "step-00000012")
    proc = run_cli("run", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(out)
    assert result["resumed_from_step"] == 8 and result["steps"] == 12 and result["stopped_early"] is True
    assert val_steps(out) == [4, 8, 12, 12]  # the replayed step 12 evaluated once more, nothing skipped


def test_a_run_stopped_at_an_evaluation_step_evaluates_it_when_resumed(tmp_path: Path) -> None:
    """A stop signal is acted on at a sync step, here only evaluation steps: the run saves and
    exits before evaluating.  The resumed run evaluates that step first, so no evaluation (and
    no chance of a best model) is lost to the interruption."""
    out = tmp_path / "r"
    args = [*SELECTED, "train.epochs=400", "train.eval_every_steps=5", "train.log_every=5", f"train.output_dir={out}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "lstm_train", "run", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not checkpoint_files(out / "checkpoints"):  # the first evaluation has saved
        assert proc.poll() is None and time.time() < deadline, "run ended before its first evaluation"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped = newest(out).step
    assert stopped % 5 == 0 and stopped not in val_steps(out)

    proc = run_cli("run", *args[:-1], f"train.max_steps={stopped + 5}", f"train.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert val_steps(out) == list(range(5, stopped + 10, 5))  # every evaluation step once, the stopped one too


def test_best_weights_saved_just_before_a_crash_count_once(tmp_path: Path) -> None:
    """An evaluation that improves writes best/, then the checkpoint of its step.  A crash
    between the two leaves best/ newer than the newest checkpoint; the resumed run replays
    that evaluation, which must count as the improvement it was, not as an evaluation without
    improvement over itself (patience 1 would then stop the run there)."""
    out = tmp_path / "r"
    args = [*SELECTED, "train.epochs=2", "train.eval_every_steps=4", "train.early_stopping.patience=1",
            "train.keep_checkpoints=10", f"train.output_dir={out}"]
    assert run_cli("run", *args).returncode == 0
    reference = result_of(out)
    best = reference["best_step"]
    assert best >= 8  # it improved after its first evaluation: there is a checkpoint before the best one
    (out / "result.json").unlink()
    for step, path in checkpoint_files(out / "checkpoints"):
        if step >= best:
            shutil.rmtree(path)
    proc = run_cli("run", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(out)
    assert result["resumed_from_step"] == best - 4
    same = ("best_step", "stopped_early", "steps", "val_mase", "test_mase")
    assert {k: result[k] for k in same} == {k: reference[k] for k in same}


def test_ranks_resume_from_the_checkpoint_rank_0_chose(fake_mnist: Path, tmp_path: Path) -> None:
    """Rank 1 sees a newer checkpoint than rank 0 (an NFS client whose cache is ahead of the
    other's).  Both must resume from the one rank 0 chose: resuming each from its own newest
    would leave rank 1 four steps ahead, in collectives rank 0 never enters."""
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "root and unshare (mount namespaces)")
    run_dir, view = tmp_path / "run", tmp_path / "rank1-view"
    args = [JOB, f"data.root={fake_mnist}", "data.global_batch_size=128", "train.epochs=3", "train.checkpoint_every=4",
            "train.keep_checkpoints=5", "train.mixed_precision=no", f"train.output_dir={run_dir}"]
    assert run_cli("run", *args).returncode == 0  # 12 steps on one process: checkpoints 4, 8, 12
    shutil.copytree(run_dir / "checkpoints", view)  # rank 1 still sees step 12...
    shutil.rmtree(run_dir / "checkpoints" / "step-00000012")  # ...which rank 0 does not
    (run_dir / "result.json").unlink()
    procs, outputs = run_rank_1_with_another_view(view, run_dir / "checkpoints", *args)
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "step-00000012" in outputs[1]  # rank 1 did see the newer one
    result = result_of(run_dir)
    assert result["resumed_from_step"] == 8 and result["steps"] == 12
    assert len(set(result["weights_sha1_per_rank"])) == 1
