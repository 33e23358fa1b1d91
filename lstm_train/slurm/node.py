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

Local sweeps
    submitit's local executor starts every job it is given at once; a sweep submitted with
    `--executor local` would run all its points together.  So each local point first takes
    one of `slurm.array_parallelism` slots (`hold_slot`: flock on `<sweep dir>/local-slots/
    slot-K.lock`, held until the process ends, so a crash frees it too), as SLURM's `%N`
    array limit does for a cluster.  A point's time limit counts from its start, waiting
    included; a point stopped while it waits leaves as a stopped run does (requeued on the
    time limit, as submitit does for a running one).
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import submitit

from ..config import validate_job
from ..signals import StopRequest

EXIT_INTERRUPTED = 143  # 128 + SIGTERM: stopped on request, checkpoint saved
DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class Trainer:
    """What every SLURM task runs: `train(job, stop)` in submitit's distributed
    environment, then submitit's requeue bookkeeping if a signal stopped it.

    Holds the job as a plain dict (validated again here, on the node); `slots`: (folder, N) for
    a local sweep's point, which trains only while it holds one of N slots (`hold_slot`)."""

    def __init__(self, job: dict[str, Any], slots: tuple[str, int] | None = None) -> None:
        self.job = job
        self.slots = slots

    def __call__(self) -> dict[str, Any]:
        usr_sig = submitit.JobEnvironment._usr_sig()
        # Handlers first, torch later (its import takes seconds): a signal from now on
        # stops the run at its first sync point instead of killing it.
        stop = StopRequest(signal.SIGTERM, usr_sig)
        try:
            if self.slots and not hold_slot(Path(self.slots[0]), self.slots[1], stop.event):
                return self.stopped(stop, usr_sig, {"interrupted": True, "steps": 0}, None)
            from ..messages import use_one_line_warnings
            from ..train import train

            use_one_line_warnings()  # the job's log reads like the CLI's: `warning: ...`
            job = validate_job(self.job, f"{self.job['train']['output_dir']} (submitted job)")
            env = export_distributed_env()
            result = train(job, stop.event)
            if not result.get("interrupted"):
                return result
            return self.stopped(stop, usr_sig, result, env)
        finally:
            stop.restore()

    @staticmethod
    def stopped(stop: StopRequest, usr_sig: int, result: dict[str, Any], env: Any) -> dict[str, Any]:
        """A signal stopped the run (its checkpoint is on disk): requeue on the time limit, else leave."""
        submitit_handler = stop.previous[usr_sig]
        if usr_sig in stop.received and callable(submitit_handler):
            # submitit's bookkeeping, now that the checkpoint is on disk.  Rank 0:
            # timed out or preempted?  checkpoint(), `scontrol requeue`, exit; or an
            # UncompletedJobError once the timeout budget is spent.  Other ranks:
            # it returns and they leave with exit 0, so that srun's
            # --kill-on-bad-exit cannot end the step while rank 0 requeues.
            submitit_handler(usr_sig, None)
            raise SystemExit(0)
        if env is not None and env.cluster == "debug":
            return result  # in-process: the caller sees "interrupted"
        # SIGTERM only: SLURM is ending the job; the checkpoint is saved (every rank
        # passed the barrier after it), SLURM decides whether the job comes back.
        raise SystemExit(EXIT_INTERRUPTED)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """submitit calls this on the timeout/preemption signal: the same job again.
        Nothing is frozen here; the next attempt finds the newest checkpoint on disk."""
        return submitit.helpers.DelayedSubmission(type(self)(self.job, self.slots))


_HELD: list[int] = []  # the slot this process holds (an open, flocked descriptor) until it exits


def hold_slot(folder: Path, slots: int, stop: threading.Event, poll_s: float = 0.5) -> bool:
    """Wait until one of `slots` slots in `folder` is free and take it (rank 0 of the local job;
    its other ranks wait for rank 0's grant).  False when `stop` was set while waiting."""
    job = os.environ.get("SUBMITIT_LOCAL_JOB_ID", str(os.getpid()))
    granted = folder / f"granted-{job}"
    folder.mkdir(parents=True, exist_ok=True)
    said = False
    while not stop.is_set():
        if os.environ.get("SUBMITIT_LOCAL_GLOBALID", "0") != "0":
            if granted.exists():
                return True
        else:
            for k in range(slots):
                fd = os.open(folder / f"slot-{k}.lock", os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                _HELD.append(fd)
                granted.write_text(f"{k}\n")
                print(f"local sweep: took slot {k + 1} of {slots} (slurm.array_parallelism)", file=sys.stderr, flush=True)
                return True
        if not said:
            print(f"local sweep: waiting for one of {slots} slot(s) (slurm.array_parallelism) in {folder}",
                  file=sys.stderr, flush=True)
            said = True
        time.sleep(poll_s)
    return False


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
