"""The one training loop, for real: MNIST, 2-process gloo DDP, kill -9 + resume, bad inputs."""

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
from PIL import Image

from lstm_train.checkpoint import checkpoint_files, read_weights
from lstm_train.data.mnist import load_split

from .conftest import ROOT, accelerate_cli, result_of, run_cli

JOB = str(ROOT / "jobs" / "mnist_lstm.yaml")


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (_, newest), *_ = checkpoint_files(run_dir / "checkpoints")
    return read_weights(newest)


def test_short_real_mnist_run_and_predict(mnist_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("run", JOB, f"data.root={mnist_root}", f"train.output_dir={out}", "train.max_steps=150",
                   "train.checkpoint_every=100")
    assert proc.returncode == 0, proc.stderr
    result = result_of(out)
    assert result["test_samples"] == 10000 and result["world_size"] == 1 and result["steps"] == 150
    assert 0.5 < result["test_accuracy"] <= 1 and result["resumed_from_step"] is None
    assert result["train_seconds"] > 0 and result["samples_per_second"] > 0
    assert [s for s, _ in checkpoint_files(out / "checkpoints")] == [150, 100]
    assert (out / "config.yaml").is_file()

    images, labels = load_split(mnist_root, "mnist", train=False)
    paths = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(images[i].numpy()).save(path)
        paths.append(str(path))
    proc = run_cli("predict", str(out), *paths)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    predicted = [line.split("\t")[1] for line in lines]
    assert sum(p == str(int(l)) for p, l in zip(predicted, labels[:3])) >= 2, lines
    assert all(0 < float(line.split("\t")[2]) <= 1 for line in lines)

    bad = run_cli("predict", str(out), str(tmp_path / "missing.png"))
    assert bad.returncode == 2 and "missing.png: no such file" in bad.stderr


def test_two_process_cpu_ddp_trains_one_model(mnist_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = accelerate_cli(2, "run", JOB, f"data.root={mnist_root}", f"train.output_dir={out}", "train.max_steps=60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "MULTI_CPU" in proc.stdout
    result = result_of(out)
    assert result["world_size"] == 2
    assert result["test_samples"] == 10000  # every test image exactly once across both ranks
    digests = result["weights_sha1_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]


def test_srun_tasks_without_torch_env_are_an_error(fake_mnist: Path, tmp_path: Path) -> None:
    env = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0"}
    proc = run_cli("run", JOB, f"data.root={fake_mnist}", f"train.output_dir={tmp_path / 'r'}", env=env)
    assert proc.returncode == 2 and "2 unrelated copies" in proc.stderr


def test_kill_9_then_resume_mid_epoch_gives_the_same_weights(fake_mnist: Path, tmp_path: Path) -> None:
    """kill -9 mid-run, resume from a checkpoint in the middle of an epoch: bit-identical weights."""
    steps_per_epoch = 8  # fake MNIST: 512 training images, batches of 64
    # 240 steps (60 epochs before: twice the training, nothing more proved): the kill comes within a
    # 0.05 s poll of the checkpoints at 100 and 110, 130 steps (and 13 checkpoints) before the end
    args = [JOB, f"data.root={fake_mnist}", "train.epochs=30", "train.checkpoint_every=10", "train.log_every=10",
            "model.dropout=0.2", "model.num_layers=2", "train.mixed_precision=no"]
    reference = tmp_path / "reference"
    assert run_cli("run", *args, f"train.output_dir={reference}").returncode == 0

    crashed = tmp_path / "crashed"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "lstm_train", "run", *args, f"train.output_dir={crashed}"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len([s for s, _ in checkpoint_files(crashed / "checkpoints") if s >= 100]) < 2:
        assert proc.poll() is None and time.time() < deadline, "run ended before two mid-run checkpoints"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (crashed / "result.json").exists()
    # Two consecutive checkpoints (10 steps apart) cannot both end an epoch of 8 steps: keep
    # the newest one that lies inside an epoch, so the resume is mid-epoch for sure.
    kept = [(s, p) for s, p in checkpoint_files(crashed / "checkpoints")]
    mid = next(s for s, _ in kept if s % steps_per_epoch)
    for s, p in kept:
        if s > mid:
            p.unlink()

    resumed = run_cli("run", *args, f"train.output_dir={crashed}")
    assert resumed.returncode == 0, resumed.stderr
    result = result_of(crashed)
    assert result["resumed_from_step"] == mid and mid % steps_per_epoch != 0 and result["parts"] == 2
    a, b = final_weights(reference), final_weights(crashed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert result_of(reference)["test_loss"] == result["test_loss"]


def test_checkpoint_of_another_model_is_a_clear_error(fake_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert run_cli("run", JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "model.hidden_size=16").returncode == 0
    (out / "result.json").unlink()  # as if it had stopped before the end: its checkpoint is what remains
    proc = run_cli("run", JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "model.hidden_size=32")
    assert proc.returncode == 2
    # Refused before anything in the run dir is written: the saved job's model differs.
    assert "holds another model than this job builds" in proc.stderr and "model.hidden_size: 16 -> 32" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resuming_on_other_data_is_a_clear_error(fake_mnist: Path, tmp_path: Path) -> None:
    from .conftest import make_fake_mnist

    make_fake_mnist(fake_mnist, name="FashionMNIST")
    out = tmp_path / "r"
    assert run_cli("run", JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "train.max_steps=4").returncode == 0
    (out / "result.json").unlink()  # unfinished: the checkpoint is what remains
    proc = run_cli("run", JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "train.max_steps=8",
                   "data.dataset=fashion_mnist")
    assert proc.returncode == 2 and "trained on other data" in proc.stderr and "classes" in proc.stderr


def test_a_finished_run_stays_finished_and_another_job_there_is_refused(fake_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = [JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "train.max_steps=12"]
    assert run_cli("run", *args).returncode == 0
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    again = run_cli("run", *args)
    assert again.returncode == 0 and "has finished already" in again.stdout
    assert json.loads(again.stdout[again.stdout.index("{"):])["already_finished"] is True
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == files
    other = run_cli("run", *args, "optim.lr=0.5")
    assert other.returncode == 2 and "optim.lr" in other.stderr and "0.01" in other.stderr and "0.5" in other.stderr


def test_nan_loss_stops_naming_the_step_and_keeps_good_checkpoints(fake_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    # 8 steps per epoch; from epoch 2 on the step schedule multiplies the LR by 1e30.
    proc = run_cli("run", JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "train.epochs=4",
                   "train.checkpoint_every=4", "train.log_every=1", "optim.name=sgd", "optim.lr=0.1",
                   "optim.scheduler=step", "optim.gamma=1e30")
    assert proc.returncode == 3, proc.stderr
    assert "loss is" in proc.stderr and "at step" in proc.stderr
    bad_step = int(proc.stderr.split("at step ")[1].split()[0])
    assert bad_step > 8
    steps = [s for s, _ in checkpoint_files(out / "checkpoints")]
    assert steps and max(steps) < bad_step
    weights = read_weights(checkpoint_files(out / "checkpoints")[0][1])
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("run", JOB, f"data.root={tmp_path}", f"train.output_dir={tmp_path / 'r'}")
    assert proc.returncode == 2 and "missing files" in proc.stderr and "train-images-idx3-ubyte" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_torchrun_two_processes_form_one_group(fake_mnist: Path, tmp_path: Path) -> None:
    from .conftest import free_port

    out = tmp_path / "torchrun"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "lstm_train", "run", JOB,
         f"data.root={fake_mnist}", f"train.output_dir={out}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(out)
    assert result["world_size"] == 2 and result["test_samples"] == 200
    assert len(set(result["weights_sha1_per_rank"])) == 1
    assert proc.stdout.count('"world_size": 2') == 1  # the result is printed once, by rank 0


def test_the_torchvision_loader_resumes_mid_epoch_bit_exact(fake_mnist: Path, tmp_path: Path) -> None:
    """The DataLoader path, with dropout: resumed from a checkpoint in the middle of an epoch
    (as after kill -9), it ends with the same weights as the run that never stopped.  Starting
    a DataLoader iterator draws a seed; drawn from the global random stream, the resumed run
    drew it at the resume step and every dropout mask after it changed."""
    out = tmp_path / "r"
    args = [JOB, f"data.root={fake_mnist}", "data.loader=torchvision", "train.epochs=3", "train.checkpoint_every=5",
            "train.keep_checkpoints=10", "model.dropout=0.2", "model.num_layers=2", "train.mixed_precision=no",
            f"train.output_dir={out}"]
    assert run_cli("run", *args).returncode == 0
    reference, reference_result = final_weights(out), result_of(out)
    (out / "result.json").unlink()
    for step, path in checkpoint_files(out / "checkpoints"):
        if step > 10:  # 8 steps per epoch: step 10 is inside the second
            shutil.rmtree(path)
    proc = run_cli("run", *args)
    assert proc.returncode == 0, proc.stderr
    assert result_of(out)["resumed_from_step"] == 10 and result_of(out)["steps"] == 24
    resumed = final_weights(out)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert result_of(out)["test_loss"] == reference_result["test_loss"]
