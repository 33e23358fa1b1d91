"""slurm/accelerate.sbatch: plain sbatch + `accelerate launch` across two real SLURM nodes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT
from .slurm_helpers import rows, time_to_end, training_pids, wait_final, wait_for


def test_sbatch_template_trains_one_model_on_two_nodes(cluster: None, tmp_path: Path, slurm_env: dict[str, str]) -> None:
    out = tmp_path / "run"
    log = tmp_path / "job.out"
    proc = subprocess.run(
        ["sbatch", "--wait", "--nodes=2", f"--output={log}", "slurm/accelerate.sbatch", "jobs/mnist_lstm.yaml",
         "train.max_steps=40", f"train.output_dir={out}", "tracking.wandb.mode=disabled"],
        capture_output=True, text=True, cwd=ROOT, env=slurm_env, timeout=300,
    )
    text = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n--- job log ---\n{text[-3000:]}"
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["test_samples"] == 10000
    assert len(result["weights_sha1_per_rank"]) == 2 and len(set(result["weights_sha1_per_rank"])) == 1
    assert "node[1-2]" in text or ("node1" in text and "node2" in text)


def test_killed_rank_ends_the_sbatch_template_job(cluster: None, tmp_path: Path, fake_slurm_env: dict[str, str],
                                                  jobs: list[str]) -> None:
    """kill -9 of rank 1 under sbatch + accelerate launch: node2's elastic agent reports the
    rank and signal, the template names the node, srun --kill-on-bad-exit ends node1."""
    out = tmp_path / "run"
    log = tmp_path / "job.out"
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--nodes=2", f"--output={log}", "slurm/accelerate.sbatch", "jobs/mnist_lstm.yaml",
         "train.epochs=5000", "train.max_steps=20000", "train.log_every=10", "train.eval_every_epochs=5000",
         f"train.output_dir={out}", "tracking.wandb.mode=disabled"],
        capture_output=True, text=True, cwd=ROOT, env=fake_slurm_env, timeout=60, check=True,
    ).stdout.strip()
    jobs.append(job_id)
    wait_for(lambda: rows(out / "metrics" / "rank-1.jsonl"), 180, "rank 1 to train")
    [pid] = training_pids(job_id, 1, var="RANK")
    os.kill(pid, signal.SIGKILL)
    ended = time_to_end(job_id)
    state = wait_final([job_id], 60)[job_id]
    text = log.read_text()
    print(f"\nkill -9 of rank 1 under slurm/accelerate.sbatch (2 nodes): {state} {ended:.1f} s later")
    assert ended < 60 and state == "FAILED", (ended, state, text[-3000:])
    assert re.search(r"rank\s+: 1 \(local_rank: 0\)", text) and "Signal 9 (SIGKILL)" in text, text[-3000:]
    assert "lstm_train: accelerate launch on node2 (machine rank 1, ranks 1-1) exited with 1" in text, text[-3000:]
    assert "srun: error: node2: task 1: Exited with exit code 1" in text, text[-3000:]


def test_time_limit_requeues_and_resumes(cluster: None, tmp_path: Path, fake_slurm_env: dict[str, str],
                                         jobs: list[str]) -> None:
    """SLOW (about 100 s, most of it SLURM's clock): the template's --signal and requeue on a
    real time limit.  A 1-minute job (`--time 1`) gets USR1 20-50 s before its limit (SLURM
    looks every 30 s, so it may come early); the script passes it on, the rank checkpoints and
    stops, the script requeues the job, and the same job id resumes from that checkpoint.  The
    second attempt's limit is raised (scontrol update) so that it is not signalled again; it
    ends the run within 40 s of training time (train.max_seconds, both attempts counted)."""
    out = tmp_path / "run"
    log = tmp_path / "job.out"
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--time=1", "--signal=B:USR1@20", f"--output={log}",
         "slurm/accelerate.sbatch", "jobs/mnist_lstm.yaml", "train.epochs=5000", "train.max_seconds=40",
         "train.log_every=10", "train.checkpoint_every=100000", "train.eval_every_epochs=5000",
         f"train.output_dir={out}", "tracking.wandb.mode=disabled"],
        capture_output=True, text=True, cwd=ROOT, env=fake_slurm_env, timeout=60, check=True,
    ).stdout.strip()
    jobs.append(job_id)
    script = (ROOT / "slurm" / "accelerate.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@120" in script and "#SBATCH --requeue" in script

    def requeued() -> bool:
        text = log.read_text() if log.exists() else ""
        if (out / "result.json").exists():
            pytest.fail(f"the run finished before its time-limit signal:\n{text[-3000:]}")
        return "requeueing job" in text

    wait_for(requeued, 150, "the time-limit requeue")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=5"], check=True)
    state = wait_final([job_id], 240)[job_id]
    text = log.read_text()
    assert state == "COMPLETED", (state, text[-3000:])
    assert f"job {job_id} is near its time limit" in text and "received SIGUSR1" in text, text[-3000:]
    assert f"requeueing job {job_id} (restart 1)" in text and f"job {job_id} (restart 1)" in text, text[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["parts"] == 2 and 0 < result["resumed_from_step"] < result["steps"], result
    # both attempts count: it ends within the 40 s, at the last step that leaves room for the final validation
    assert result["stopped_at_time_limit"] and 30 <= result["train_seconds"] <= 41, result
    assert f"resuming from {out / 'checkpoints'}" in text, text[-3000:]
