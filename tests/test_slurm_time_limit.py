"""A real SLURM time limit, both ways a job meets it: `lstm-train submit` (submitit's USR2, the
loop's checkpoint, submitit's requeue) and slurm/accelerate.sbatch (`--signal=B:USR1`, the
script passes it on and requeues).

SLOW because it must be: SLURM signals a job only from its periodic time-limit check (every 30 s)
and a limit is whole minutes, so each job waits for SLURM's clock, then for its requeue
(`AuthInfo=cred_expire`, 10 s on the local cluster) and a second start.  The two jobs run side by
side in one test so that those waits are spent once (about 80 s) instead of one after the other
(about 175 s as two tests); each job's assertions are its own, as they were in the two tests.

Both jobs are pinned to node1 (`node1_jobs`): the node-down test takes node2 away, so this test
can run in its own xdist group, on another worker, while the `slurm` group goes on (conftest).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ROOT
from .slurm_helpers import job_ids, logs_of, result, submit, wait_final

TIME_LIMIT_STEPS = 60000


def raise_limits_when_requeued(requeued: dict[str, Callable[[], bool]], timeout: float) -> dict[str, float]:
    """Poll every job's `requeued()`; as soon as one says so, give that job a longer limit
    (`scontrol update TimeLimit=15`) so that its second attempt runs to the end without being
    signalled again, whatever this machine's speed.  Seconds from the call to each requeue."""
    t0, seen = time.monotonic(), {}
    while len(seen) < len(requeued):
        for job_id, check in requeued.items():
            if job_id not in seen and check():
                seen[job_id] = time.monotonic() - t0
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=15"], check=True)
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for the time-limit requeue of "
                        f"{sorted(set(requeued) - set(seen))} (requeued: {seen})")
        time.sleep(0.5)
    return seen


def submit_time_limit_job(run_dir: Path, env: dict[str, str], jobs: list[str]) -> str:
    """A 2-minute `lstm-train submit` job: USR2 comes 75-105 s before the limit (SLURM checks
    every 30 s), i.e. 15-45 s after the start.  Periodic checkpoints are off (checkpoint_every is
    huge), so a resume from step > 0 can only come from the checkpoint written on the signal.

    Enough work to outlast the signal on a quiet machine too: the loop runs the tutorial job at up
    to ~600 steps/s here, so 60,000 steps take well over a minute.  train.max_seconds=50 (both
    attempts counted) ends it: above the 45 s by which the signal has come, however the first
    attempt's training start falls."""
    p = submit(run_dir, "train.epochs=70", f"train.max_steps={TIME_LIMIT_STEPS}", "train.log_every=10",
               "train.checkpoint_every=100000", "tracking.wandb.mode=disabled", "train.max_seconds=50",
               "slurm.time_min=2", "slurm.signal_delay_s=75", "slurm.max_num_timeout=3",
               "slurm.additional.nodelist=node1", env=env, jobs=jobs)
    assert p.returncode == 0, p.stdout + p.stderr
    jid = job_ids(run_dir)[0]
    script = (run_dir / "slurm" / f"{jid}_submission.sh").read_text()
    assert "#SBATCH --signal=USR2@75" in script and "#SBATCH --time=2" in script, script
    assert "#SBATCH --nodelist=node1" in script, script
    return jid


def sbatch_time_limit_job(out: Path, log: Path, env: dict[str, str], jobs: list[str]) -> str:
    """A 1-minute slurm/accelerate.sbatch job (`--time 1`): USR1 20-50 s before its limit (SLURM
    looks every 30 s, so it may come early), i.e. 10-40 s after the start; it ends the run within
    40 s of training time (train.max_seconds, both attempts counted)."""
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--nodelist=node1", "--time=1", "--signal=B:USR1@20", f"--output={log}",
         "slurm/accelerate.sbatch", "jobs/mnist_lstm.yaml", "train.epochs=5000", "train.max_seconds=40",
         "train.log_every=10", "train.checkpoint_every=100000", "train.eval_every_epochs=5000",
         f"train.output_dir={out}", "tracking.wandb.mode=disabled"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60, check=True,
    ).stdout.strip()
    jobs.append(job_id)
    script = (ROOT / "slurm" / "accelerate.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@120" in script and "#SBATCH --requeue" in script
    return job_id


@pytest.mark.node1_jobs
def test_time_limit_requeues_and_resumes_under_submit_and_the_sbatch_template(
        cluster: None, tmp_path: Path, slurm_env: dict[str, str], fake_slurm_env: dict[str, str],
        jobs: list[str]) -> None:
    """Both jobs queued at once; each is given a longer limit the moment it has requeued itself
    (so its second attempt is not signalled again), then both must finish COMPLETED, resumed
    from the checkpoint written on the signal."""
    run_dir = tmp_path / "submit"
    out, log = tmp_path / "template" / "run", tmp_path / "template.out"
    t0 = time.monotonic()
    sub_id = submit_time_limit_job(run_dir, slurm_env, jobs)
    tpl_id = sbatch_time_limit_job(out, log, fake_slurm_env, jobs)
    out_log = run_dir / "slurm" / f"{sub_id}_0_log.out"

    def submit_requeued() -> bool:
        if out_log.exists() and "Requeued job" in out_log.read_text():
            return True
        if (run_dir / "result.json").exists():
            pytest.fail("the submit job finished before its time-limit signal: raise train.max_steps for this machine")
        return False

    def template_requeued() -> bool:
        text = log.read_text() if log.exists() else ""
        if (out / "result.json").exists():
            pytest.fail(f"the sbatch template's run finished before its time-limit signal:\n{text[-3000:]}")
        return "requeueing job" in text

    requeued = raise_limits_when_requeued({sub_id: submit_requeued, tpl_id: template_requeued}, 240)
    states = wait_final([sub_id, tpl_id], 480, run_dir / "slurm")
    print(f"\ntime-limit test: requeued {requeued[sub_id]:.1f} s (submit) and {requeued[tpl_id]:.1f} s (template) "
          f"after submit, both finished {time.monotonic() - t0:.1f} s after it")

    # lstm-train submit: submitit's USR2, the loop's checkpoint, submitit's requeue
    out_text, err = logs_of(run_dir, sub_id)
    assert states[sub_id] == "COMPLETED", (states, out_text, err)
    assert "this job is timed-out" in out_text and "Requeued job" in out_text, out_text
    assert "received SIGUSR2" in err, err
    res = result(run_dir)
    # all the steps, or (a CPU without bf16 runs them ~10x slower) the 50 s training budget, spent across both attempts
    assert res["steps"] == TIME_LIMIT_STEPS or res["stopped_at_time_limit"], res
    assert 0 < (res["resumed_from_step"] or 0) < res["steps"], res

    # slurm/accelerate.sbatch: B:USR1 to the script, passed on to the ranks, the script's requeue
    text = log.read_text()
    assert states[tpl_id] == "COMPLETED", (states, text[-3000:])
    assert f"job {tpl_id} is near its time limit" in text and "received SIGUSR1" in text, text[-3000:]
    assert f"requeueing job {tpl_id} (restart 1)" in text and f"job {tpl_id} (restart 1)" in text, text[-3000:]
    tpl = json.loads((out / "result.json").read_text())
    assert tpl["parts"] == 2 and 0 < tpl["resumed_from_step"] < tpl["steps"], tpl
    # both attempts count: it ends within the 40 s, at the last step that leaves room for the final validation
    assert tpl["stopped_at_time_limit"] and 30 <= tpl["train_seconds"] <= 41, tpl
    assert f"resuming from {out / 'checkpoints'}" in text, text[-3000:]
