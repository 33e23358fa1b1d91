"""The training loop: the tutorial's loop, with distribution as thin wrapping.

    for epoch in range(epochs):
        for images, labels in batches:
            loss = criterion(model(images), labels)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
    evaluate(model, test_data)

`train` below is that loop.  What a cluster job needs around it is a named step, each in the
module of its concern (in brackets):

    setup        [startup] the Accelerator (CPU, one GPU, DDP, multi-node: the same code),
                 the task's data and model, the optimizer and the batch plan
    restore      [startup] the newest checkpoint of the run directory, or a fresh start
    train_step   [steps] forward and backward over this rank's micro-batches, one optimizer step
    sync         [steps] every `train.log_every` steps (and before anything is evaluated or
                 saved) one all-reduce: the loss, a NaN check, stop requests (SIGTERM, SLURM's
                 warning signal); metrics logged
    time_due     [deadline] train.max_seconds: the clock, agreed by the ranks
    save         [steps] an atomic checkpoint every `train.checkpoint_every` steps and on a stop
    validate     [evaluation] evaluation on the validation split; the best weights kept (by
                 train.select's metric, `selection`), early stopping
    conclude     [result] the best weights tested once, result.json, W&B summary and model artifact

What changes from step to step lives in one `LoopState` (saved in checkpoints); what is fixed
for the run lives in `Run` (both in `loop_state`).  Split by concern so that each room reads
top to bottom and this one reads as the loop; optimizers live in `optim`, batch plans in
`data.batching`, checkpoint files (where they are and what they hold) in `checkpoint`.
"""

from __future__ import annotations

import threading
from typing import Any

from ..config import JobBase
from ..distributed import make_accelerator, resolve_precision
from ..progress import Progress
from ..tasks import get_task
from .deadline import past_budget, time_due
from .evaluation import validate, validation_due
from .loop_state import AlreadyFinished, LoopState, NonFiniteLoss, Run
from .result import conclude, interrupted
from .startup import finished_result, restore, setup
from .steps import epoch_batches, save, sync, sync_due, train_step

__all__ = ["AlreadyFinished", "LoopState", "NonFiniteLoss", "Run", "past_budget", "train"]


def train(job: JobBase, stop: threading.Event | None = None) -> dict[str, Any]:
    """Train `job` to the end (or until `stop` is set) and return its result.

    Re-running with the same run directory resumes from the newest checkpoint; a run
    that has finished stays finished (its result is returned, nothing is touched).
    When `stop` is set (by a signal), every rank saves at the next sync step and the
    result has `"interrupted": True`.
    """
    stop = stop or threading.Event()
    task_class = get_task(job.task)
    precision = resolve_precision(job.train.mixed_precision, task_class.precision, job.train.cpu, warn=True)
    accelerator = make_accelerator(precision, job.train.cpu)
    finished = finished_result(job, accelerator)
    if finished is not None:
        return finished
    try:
        run = setup(job, task_class, accelerator, precision)
    except AlreadyFinished as done:
        return done.result
    state, progress = LoopState(), None
    try:
        state = restore(run)
        progress = Progress(run.total_steps, run.unit, enabled=accelerator.is_main_process, initial=state.step)
        epoch, start = run.plan.locate(state.step)
        if validation_due(run, state, epoch - 1, state.step - start):  # stopped at an evaluation step unevaluated
            validate(run, state)
        while state.step < run.total_steps and not state.stopping:
            epoch, start = run.plan.locate(state.step)
            epoch_end = state.step - start + run.plan.steps_in_epoch(epoch)
            if start == 0:
                state.carry = {}  # what a task carries (Task.step_loss) starts afresh with every epoch
            for batches in epoch_batches(run, epoch, start):
                state.pending.append(train_step(run, batches, state))
                state.step += 1
                evaluating = validation_due(run, state, epoch, epoch_end)
                if evaluating or sync_due(run, state) or time_due(run, state):  # a NaN stops before eval or save
                    sync(run, state, stop, progress)
                if evaluating and not state.stopping:
                    validate(run, state)  # before the checkpoint of this step, which then holds its outcome
                if state.step % run.job.train.checkpoint_every == 0 or state.stopping:
                    save(run, state)
                if state.stopping or state.step >= run.total_steps:
                    break
        if state.stopping == "signal":
            return interrupted(run, state)
        return conclude(run, state)
    except BaseException as error:
        run.tracker.finish({"error": f"{type(error).__name__}: {error}", "steps": state.step}, exit_code=1)
        raise
    finally:
        if progress is not None:
            progress.close()
        if run.lock:
            run.lock.release()
