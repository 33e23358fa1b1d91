"""A rank that dies ends the launch, for real: kill -9 of rank 1 in a 2-process gloo group under
`accelerate launch --multi_gpu` and `torchrun` (SLURM's side, and hung ranks: test_slurm_faults.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT, free_port

JOB = str(ROOT / "jobs" / "mnist_lstm.yaml")
BIN = Path(sys.executable).parent


def started(run_dir: Path, processes: list[subprocess.Popen]) -> None:
    """Wait until rank 1 has logged a training step (both ranks are inside the loop)."""
    log = run_dir / "metrics" / "rank-1.jsonl"
    deadline = time.time() + 240
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert all(p.poll() is None for p in processes) and time.time() < deadline, "training never started"
        time.sleep(0.1)


def pid_of_rank(marker: str, rank: int) -> int:
    """The pid of the process with this test's marker and RANK=rank in its environment."""
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"TEST_MARKER={marker}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"no process with RANK={rank}")


@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_kill_9_of_rank_1_ends_the_launch_naming_the_rank(launcher: str, fake_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    marker = uuid.uuid4().hex
    job = ["-m", "lstm_train", "run", JOB, f"data.root={fake_mnist}", f"train.output_dir={out}", "train.epochs=1000",
           "train.log_every=2"]
    if launcher == "accelerate":
        command = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *job]
    else:
        command = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), *job]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "TEST_MARKER": marker}
    launch = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started(out, [launch])
        victim = pid_of_rank(marker, 1)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # measured 1.5-3.5 s; a hang guard, generous for a loaded machine: a survivor that waited on its peer would
        # hang for the collective timeout (600 s), and the assertions below tell that apart without a clock
        output, _ = launch.communicate(timeout=180)
        took = time.monotonic() - killed_at
    finally:
        launch.kill()
    print(f"{launcher}: kill -9 of rank 1 -> launch ended after {took:.1f} s with exit {launch.returncode}")
    assert launch.returncode == 1, output[-3000:]
    # torch's elastic agent (behind both launchers) names the rank that died, its host, pid and signal.
    root_cause = output.split("Root Cause (first observed failure):")[1]
    assert "rank      : 1 (local_rank: 1)" in root_cause, output[-3000:]
    assert f"host      : {socket.getfqdn()}" in root_cause
    assert f"exitcode  : -9 (pid: {victim})" in root_cause and f"Signal 9 (SIGKILL) received by PID {victim}" in root_cause
    # The survivor learnt of it at once (a closed socket, or the agent's SIGTERM), not from a timeout.
    assert "Timed out" not in output
