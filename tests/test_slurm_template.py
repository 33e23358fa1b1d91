"""slurm/accelerate.sbatch: plain sbatch + `accelerate launch` across two real SLURM nodes.

Its time limit (`--signal=B:USR1`, requeue, resume) is tested in test_slurm_time_limit.py, side
by side with `lstm-train submit`'s."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

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
