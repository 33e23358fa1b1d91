"""Faults on the real local SLURM cluster: one job per run directory, a rank that dies,
a rank that hangs, a node that goes down.

Each job trains the small fake MNIST with W&B off, long enough to be hit mid-run;
the kill-to-end times are printed (`-s`).  What ends each job is described in
lstm_train/slurm/__init__.py (srun --kill-on-bad-exit, the collective timeout,
SLURM's requeue).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from lstm_train.slurm.jobstate import slurm_states

from .slurm_helpers import cli, job_ids, result, rows, submit, time_to_end, training_pids, wait_final, wait_for

# Long enough never to finish on its own while a test is at it (a few ms per step).
LONG = ["train.epochs=5000", "train.max_steps=20000", "train.log_every=10", "train.checkpoint_every=50",
        "train.eval_every_epochs=5000", "tracking.wandb.mode=disabled", "slurm.time_min=10"]


def started(run_dir: Path, rank: int = 1) -> bool:
    return bool(rows(run_dir / "metrics" / f"rank-{rank}.jsonl"))


def test_submit_twice_is_refused_until_a_new_run(cluster: None, tmp_path: Path, fake_slurm_env: dict[str, str],
                                                 jobs: list[str]) -> None:
    """The default run directory (runs/<job>/<run id>, here under tmp_path) belongs to
    its job while the job is queued or running."""
    first = submit(None, *LONG, env=fake_slurm_env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = Path(re.search(r"^run dir:\s+(\S+)$", first.stdout, re.M)[1])
    jobs += job_ids(run_dir)
    jid = jobs[0]

    again = submit(None, *LONG, env=fake_slurm_env, cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stdout + again.stderr
    assert f"{run_dir} belongs to job {jid}, still queued or running" in again.stderr, again.stderr
    assert "--new-run" in again.stderr and job_ids(run_dir) == [jid]

    fresh = submit(None, *LONG, env=fake_slurm_env, cwd=tmp_path, flags=("--new-run",))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    new_dir = Path(re.search(r"^run dir:\s+(\S+)$", fresh.stdout, re.M)[1])
    jobs += job_ids(new_dir)
    # the same label and hash, a time stamp between them: <what differs>-<YYYYmmdd-HHMMSS>-<hash>
    label, digest = run_dir.name.rsplit("-", 1)
    assert new_dir.parent == run_dir.parent and re.fullmatch(re.escape(label) + r"-\d{8}-\d{6}-" + digest,
                                                             new_dir.name), (run_dir, new_dir)
    assert job_ids(new_dir) != [jid]

    fixed = submit(tmp_path / "fixed", *LONG, env=fake_slurm_env, flags=("--new-run",))
    assert fixed.returncode == 2 and "--new-run picks a new run directory" in fixed.stderr, fixed.stderr


def test_killed_rank_ends_the_submitted_job_naming_it(cluster: None, tmp_path: Path,
                                                      fake_slurm_env: dict[str, str], jobs: list[str]) -> None:
    """kill -9 of rank 1 of a 2-node job: srun ends the step, the job is FAILED, and
    `status` names the rank and node that died first."""
    run_dir = tmp_path / "killed"
    p = submit(run_dir, *LONG, "slurm.nodes=2", env=fake_slurm_env, jobs=jobs)
    assert p.returncode == 0, p.stdout + p.stderr
    jid = job_ids(run_dir)[0]
    assert "--kill-on-bad-exit=1" in (run_dir / "slurm" / f"{jid}_submission.sh").read_text()
    wait_for(lambda: list((run_dir / "checkpoints").glob("step-*")), 180, "the first checkpoint")
    [pid] = training_pids(jid, 1)
    os.kill(pid, signal.SIGKILL)
    ended = time_to_end(jid)
    state = wait_final([jid], 60)[jid]
    status = cli("status", str(run_dir), env=fake_slurm_env)
    print(f"\nkill -9 of rank 1 under lstm-train submit (2 nodes): job left the queue {ended:.1f} s later, "
          f"{state}\n{status.stdout}")
    assert ended < 60 and state == "FAILED", (ended, state)
    assert f"job {jid} ended FAILED" in status.stdout, status.stdout
    assert "first to die: rank 1 on node2: Killed (srun)" in status.stdout, status.stdout
    assert "newest checkpoint: step" in status.stdout, status.stdout


def test_hung_rank_ends_the_job_at_the_collective_timeout(cluster: None, tmp_path: Path,
                                                         fake_slurm_env: dict[str, str], jobs: list[str]) -> None:
    """kill -STOP of rank 1: rank 0's next collective fails after the collective timeout,
    and srun's kill-on-bad-exit then ends the stopped rank (without it the job would stay
    RUNNING until its time limit)."""
    env = {**fake_slurm_env, "LSTM_TRAIN_COLLECTIVE_TIMEOUT_S": "30"}
    run_dir = tmp_path / "hung"
    p = submit(run_dir, *LONG, "slurm.nodes=2", env=env, jobs=jobs)
    assert p.returncode == 0, p.stdout + p.stderr
    jid = job_ids(run_dir)[0]
    wait_for(lambda: started(run_dir), 180, "rank 1 to train")
    [pid] = training_pids(jid, 1)
    try:
        os.kill(pid, signal.SIGSTOP)
        ended = time_to_end(jid, 300)  # a hang guard: the job's own limit (slurm.time_min=10) is 600 s
    finally:
        subprocess.run(["scancel", jid], check=False)
    state = wait_final([jid], 60)[jid]
    status = cli("status", str(run_dir), env=fake_slurm_env)
    print(f"\nkill -STOP of rank 1, collective timeout 30 s: job left the queue {ended:.1f} s later, {state}\n"
          f"{status.stdout}")
    # Not before the collective timeout (30 s), and far before the job's 10-minute limit, which is where a stopped
    # rank would hold it without srun's kill-on-bad-exit.  After the timeout come rank 0's exit, srun's kill of
    # the stopped rank (KillWait 10 s) and slurmctld's bookkeeping: 5-30 s on a quiet machine, more beside a
    # loaded suite, so 120 s, not 60 (a fifth of the limit it tells apart).
    assert 30 <= ended < 120 and state == "FAILED", (ended, state)
    assert "first to die: rank 0 on node1: Exited with exit code 1 (srun)" in status.stdout, status.stdout
    assert "error in task 0: RuntimeError" in status.stdout and "Timed out waiting 30000ms" in status.stdout


def node_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-n", node, "-o", "%t"], capture_output=True, text=True).stdout.strip()


def resume_if_down(node: str) -> None:
    """Give the node back to the cluster (ReturnToService=2 usually has, at once)."""
    if re.match(r"(down|drain|drng|fail)", node_state(node)):
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)


def others_on(node: str, mine: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-w", node, "-o", "%i"], capture_output=True, text=True).stdout
    return [j for j in out.split() if j.split("_")[0] != mine]


def test_node_down_requeues_and_resumes(cluster: None, tmp_path: Path, fake_slurm_env: dict[str, str],
                                        jobs: list[str]) -> None:
    """`scontrol update nodename=node2 state=down` under a 2-node job: NODE_FAIL, requeued
    with the same id, resumed from the newest checkpoint, COMPLETED; `status` shows both
    attempts."""
    run_dir = tmp_path / "nodefail"
    # Other jobs on node2 would be requeued too: let them finish before this one starts (waiting
    # after its first checkpoint instead let a fast run finish before the node went down).
    deadline = time.monotonic() + 20
    while others_on("node2", "none") and time.monotonic() < deadline:
        time.sleep(2)
    p = submit(run_dir, "slurm.nodes=2", "train.epochs=500", "train.max_steps=1000", "train.log_every=10",
               "train.checkpoint_every=50", "train.eval_every_epochs=500", "tracking.wandb.mode=disabled",
               "slurm.time_min=10", env=fake_slurm_env, jobs=jobs)
    assert p.returncode == 0, p.stdout + p.stderr
    jid = job_ids(run_dir)[0]
    wait_for(lambda: list((run_dir / "checkpoints").glob("step-*")), 180, "the first checkpoint", interval=0.1)
    assert not (run_dir / "result.json").exists(), "finished before the node went down: raise train.max_steps"
    try:
        t0 = time.monotonic()
        subprocess.run(["scontrol", "update", "nodename=node2", "state=down", "reason=lstm-train-test"], check=True)
        wait_for(lambda: slurm_states([jid])[jid].state != "RUNNING", 60, "the job to leave node2")
        resume_if_down("node2")
        state = wait_final([jid], 300, run_dir / "slurm")[jid]
        t_done = time.monotonic() - t0
    finally:
        resume_if_down("node2")
    res = result(run_dir)
    status = cli("status", str(run_dir), env=fake_slurm_env)
    print(f"\nnode2 down mid-job: {state} {t_done:.1f} s later, resumed_from_step {res['resumed_from_step']}\n"
          f"{status.stdout}")
    assert state == "COMPLETED" and res["steps"] == 1000 and 0 < res["resumed_from_step"] < 1000, (state, res)
    assert re.search(rf"^{jid}\s+COMPLETED", status.stdout, re.M), status.stdout
    assert f"job {jid} was requeued 1 time(s):" in status.stdout, status.stdout
    assert re.search(r"attempt 1: NODE_FAIL on node\[1-2\]", status.stdout), status.stdout
    assert re.search(r"attempt 2: COMPLETED on node\[1-2\]", status.stdout), status.stdout
    out = (run_dir / "slurm" / f"{jid}_0_log.out").read_text()
    assert f"resuming from {run_dir / 'checkpoints'}" in out, out
    assert json.loads((run_dir / "submission.json").read_text())["job_ids"] == [jid]
