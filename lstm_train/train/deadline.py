"""`train.max_seconds`: when the clock stops the run.

A run under a time budget ends at the last step that leaves room for the next step and for the
final validation (`timelimit.Reserve` measures both); under several processes the ranks agree
on it at steps every rank computes alike, so that they stop together.  Apart from `steps`
because only budgeted runs pay for any of it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .. import timelimit
from ..data.batching import eval_batches_for
from ..distributed import autocast
from ..tasks.base import Split, evaluate_sums, split_size
from .loop_state import LoopState, Run


TIME_CHECK_S = 2.0  # train.max_seconds under several processes: the ranks compare clocks about this often


def time_due(run: Run, state: LoopState) -> bool:
    """Whether `train.max_seconds` has passed (`past_budget`), so that a sync (which stops the run)
    is due now, whatever `log_every` says: one process reads its clock every step; several agree at steps
    every rank computes alike (`plan_time_check`: about every TIME_CHECK_S seconds, every step
    near the end), with one all-reduce of two numbers."""
    limit = run.job.train.max_seconds
    if limit is None:
        return False
    if run.world == 1:
        return past_budget(run, state)
    if state.step < state.next_time_check:
        return False
    past = past_budget(run, state)
    local = torch.tensor([float(past), state.seconds(), reserved(run, state)], device=run.accelerator.device)
    total = run.accelerator.reduce(local.clone(), "sum")
    plan_time_check(state, float(total[1]) / run.world, limit - float(total[2]) / run.world)
    return float(total[0]) > 0


def past_budget(run: Run, state: LoopState) -> bool:
    """Whether this rank's training time, plus what a stop now still runs inside it (`reserved`),
    has reached `train.max_seconds`: the run ends at the last step that leaves room for the next
    one and for its final validation."""
    limit = run.job.train.max_seconds
    if limit is None:
        return False
    seconds = state.seconds()
    state.reserve.observe(state.step, seconds)
    if final_validation(run, state) and state.reserve.eval_seconds is None and seconds >= timelimit.PROBE_AT * limit:
        probe_validation(run, state, limit)
    return seconds + reserved(run, state) >= limit


def final_validation(run: Run, state: LoopState) -> bool:
    """Whether a stop at this step still validates (`conclude`: the last weights compete too)."""
    return run.splits.val is not None and state.last_eval != state.step


def reserved(run: Run, state: LoopState) -> float:
    """Seconds of the budget a stop now still needs: the next step and the final validation
    (`timelimit.Reserve`: measured by the newest validation, or by the probe before one ran)."""
    return state.reserve.seconds(final_validation(run, state))


def probe_validation(run: Run, state: LoopState, limit: float) -> None:
    """Foresee how long the final validation takes before any has run: a few parts of this rank's
    validation batches timed and scaled to the whole (`timelimit.probe`), and on the main process
    what a validation runs besides (the task's evaluation tables, a language model's sample: a
    fifth of its validation), run once into a scratch folder.  Local to the rank (the plain
    module, no collective), counted as evaluation time."""
    began, began_cpu = time.perf_counter(), time.process_time()
    split, device = run.splits.val, run.accelerator.device
    batches = eval_batches_for(run.job.data, split_size(split), run.rank, run.world, run.task.lengths(split))

    def piece(part: Split, some: list[torch.Tensor]) -> None:
        evaluate_sums(run.task, run.net, part, some, autocast(device, run.precision), run.splits.info)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the time of the work, not of queueing it

    estimate = timelimit.probe(run.task.eval_pieces(split, batches), piece, limit)
    if run.accelerator.is_main_process:
        tables = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="lstm-train-probe-") as scratch:
            run.task.evaluation_tables(run.net, run.splits.info, state.step, Path(scratch))
        estimate += time.perf_counter() - tables
    state.reserve.evaluated(estimate)
    took = time.perf_counter() - began
    state.reserve.pause(took)
    state.eval_seconds += took
    state.eval_cpu_seconds += time.process_time() - began_cpu


def plan_time_check(state: LoopState, mean_seconds: float, limit: float) -> None:
    """The next step to compare clocks at, from the ranks' agreed mean time per step (the same on
    every rank): TIME_CHECK_S or the time left before `limit` (the budget less the ranks' mean
    reserve) away, whichever is sooner, and at least one step."""
    before, state.time_mark = state.time_mark, (state.step, mean_seconds)
    if before is None or state.step <= before[0] or mean_seconds <= before[1]:
        state.next_time_check = state.step + 1
        return
    per_step = (mean_seconds - before[1]) / (state.step - before[0])
    window = max(0.0, min(TIME_CHECK_S, limit - mean_seconds))
    state.next_time_check = state.step + max(1, int(window / per_step))
