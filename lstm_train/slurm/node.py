"""What runs on the compute node: one `Trainer` per SLURM task.

DeiT/DINO's `run_with_submitit.py` pattern: a small picklable callable that
submitit runs in every task, with a `checkpoint()` that hands submitit the same
job again for the requeue.  All state lives in the run directory, none in the
pickle, so a requeued job builds a fresh `Trainer` and `train` resumes from the
newest checkpoint it finds there (mid-epoch), logging to the same W&B runs.

This module imports nothing of the submit side (pre-flight, submission, job
states, status): a node needs the job dict, submitit's job environment and the
training loop, nothing else.

Signals
    SLURM sends USR2 `slurm.signal_delay_s` before the time limit (and on
    preemption where the cluster is set up to).  The handler only sets a stop flag
    (`StopRequest`, the same helper as `lstm-train run`); the loop notices it at
    its next sync point, every rank saves one checkpoint and `train` returns.  Then
    submitit's own handler does the bookkeeping on rank 0: timed out or preempted,
    the timeout budget (`slurm.max_num_timeout`), `Trainer.checkpoint()`,
    `scontrol requeue`.  SIGTERM alone (scancel, `scontrol requeue`, preemption
    without the user signal) also saves a checkpoint if the loop reaches a sync
    point within SLURM's KillWait; SLURM decides whether the job comes back.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import submitit

from ..config import validate_job
from ..signals import StopRequest

EXIT_INTERRUPTED = 143  # 128 + SIGTERM: stopped on request, checkpoint saved
DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class Trainer:
    """What every SLURM task runs: `train(job, stop)` in submitit's distributed
    environment, then submitit's requeue bookkeeping if a signal stopped it.

    Holds the job as a plain dict (validated again here, on the node)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job

    def __call__(self) -> dict[str, Any]:
        usr_sig = submitit.JobEnvironment._usr_sig()
        # Handlers first, torch later (its import takes seconds): a signal from now on
        # stops the run at its first sync point instead of killing it.
        stop = StopRequest(signal.SIGTERM, usr_sig)
        try:
            from ..messages import use_one_line_warnings
            from ..train import train

            use_one_line_warnings()  # the job's log reads like the CLI's: `warning: ...`
            job = validate_job(self.job, f"{self.job['train']['output_dir']} (submitted job)")
            env = export_distributed_env()
            result = train(job, stop.event)
            if not result.get("interrupted"):
                return result
            submitit_handler = stop.previous[usr_sig]
            if usr_sig in stop.received and callable(submitit_handler):
                # submitit's bookkeeping, now that the checkpoint is on disk.  Rank 0:
                # timed out or preempted?  checkpoint(), `scontrol requeue`, exit; or an
                # UncompletedJobError once the timeout budget is spent.  Other ranks:
                # it returns and they leave with exit 0, so that srun's
                # --kill-on-bad-exit cannot end the step while rank 0 requeues.
                submitit_handler(usr_sig, None)
                raise SystemExit(0)
            if env.cluster == "debug":
                return result  # in-process: the caller sees "interrupted"
            # SIGTERM only: SLURM is ending the job; the checkpoint is saved (every rank
            # passed the barrier after it), SLURM decides whether the job comes back.
            raise SystemExit(EXIT_INTERRUPTED)
        finally:
            stop.restore()

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """submitit calls this on the timeout/preemption signal: the same job again.
        Nothing is frozen here; the next attempt finds the newest checkpoint on disk."""
        return submitit.helpers.DelayedSubmission(type(self)(self.job))


def export_distributed_env() -> submitit.JobEnvironment:
    """RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT from the job
    (submitit's `TorchDistributedEnvironment`).

    CUDA_VISIBLE_DEVICES is left as SLURM set it (all GPUs of the node): Accelerate
    picks `cuda:LOCAL_RANK`.  A one-task job clears inherited variables so that it
    trains alone instead of waiting for a group that does not exist."""
    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    else:
        for key in DIST_VARS:
            os.environ.pop(key, None)
    return env
