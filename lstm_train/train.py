"""The training loop: the tutorial's loop, with distribution as thin wrapping.

    for epoch in range(epochs):
        for images, labels in batches:
            loss = criterion(model(images), labels)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
    evaluate(model, test_data)

`train` below is that loop.  What a cluster job needs around it is a named step:

    setup        the Accelerator (CPU, one GPU, DDP, multi-node: the same code), the
                 task's data and model, the optimizer and the batch plan
    restore      the newest checkpoint of the run directory, or a fresh start
    train_step   forward and backward over this rank's micro-batches, one optimizer step
    sync         every `train.log_every` steps (and before anything is evaluated or saved)
                 one all-reduce: the loss, a NaN check, stop requests (SIGTERM, SLURM's
                 warning signal); metrics logged
    save         an atomic checkpoint every `train.checkpoint_every` steps and on a stop
    validate     evaluation on the validation split; the best weights kept (by train.select's
                 metric, `selection`), early stopping
    conclude     the best weights tested once, result.json, W&B summary and model artifact

What changes from step to step lives in one `LoopState` (saved in checkpoints);
what is fixed for the run lives in `Run`.  The module is one concern, the loop and its
steps, kept together so that it reads top to bottom; optimizers live in `optim`, batch
plans in `data.batching`, checkpoint files in `checkpoint`.
"""

from __future__ import annotations

import contextlib
import json
import random
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from . import about, averaging, checkpoint, halving, runfiles, runlock, timelimit, warmstart
from .averaging import WeightAverage
from .config import JobBase, save_job
from .data import prepared
from .data.batching import BatchPlan, eval_batches_for
from .data.ragged import to_device
from .distributed import (
    BatchLayout, batch_layout, broadcast_buffers, broadcast_object, gather_objects,
    autocast, make_accelerator, resolve_precision, set_threads, SparseGradients, worker_info,
)
from .optim import Budget, make_optimizer, make_scheduler
from .progress import Progress
from .schema import ConfigError
from .selection import Selection
from .tasks import get_task
from .tasks.base import Batch, Split, Splits, Task, evaluate_sums, split_size
from .tracking import Tracker


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class AlreadyFinished(Exception):
    """Another copy of this run finished while this one was starting; `result` is its result."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("already finished")
        self.result = result


@dataclass
class Run:
    """Everything fixed for one training run, set up once by `setup`."""

    job: JobBase
    task: Task
    splits: Splits
    accelerator: Accelerator
    net: nn.Module  # the plain module: checkpoints, evaluation and digests use it, whatever wraps it
    model: nn.Module  # what trains: `net` wrapped by DDP (and torch.compile)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    budget: Budget | None  # train.max_seconds: the schedule's clock, agreed by the ranks at sync steps
    plan: BatchPlan
    layout: BatchLayout
    total_steps: int
    precision: str
    tracker: Tracker
    dataset: torch.utils.data.Dataset | None  # the classic DataLoader path, when the task offers one
    lengths: torch.Tensor | None  # per training sample (CPU): padding accounting
    tokens: torch.Tensor | None  # per training sample (CPU): tokens/s
    lock: runlock.RunLock | None  # rank 0's hold on the run directory (None on the other ranks)
    sparse_gradients: SparseGradients | None  # sparse embedding tables under DDP, all-reduced by the loop
    selection: Selection  # train.select: the validation metric that picks best/ and counts patience
    average: WeightAverage | None = None  # train.ema / train.ntasgd: the weights evaluation uses
    warm: dict[str, Any] | None = None  # train.init_from, read as this run started afresh (`warmstart`)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def run_dir(self) -> Path:
        return self.job.run_dir

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / runfiles.CHECKPOINTS

    @property
    def unit(self) -> str:
        return self.task.throughput_unit


@dataclass
class LoopState:
    """What the loop knows between steps.  The first group continues from the checkpoint a run
    resumes from (`checkpoint.SavedLoop`, the step and the training time; the best weights
    from checkpoints/best/); the second belongs to this process's part of the run."""

    step: int = 0
    seconds_before: float = 0.0  # training time of the earlier parts of this run
    parts: int = 1  # how many times the run has been started: 1 + resumes
    counts_before: dict[str, int] = field(default_factory=dict)  # samples/tokens/padded of earlier parts, all ranks
    evals_since_best: int = 0  # evaluations since patience's last improvement (train.early_stopping)
    last_eval: int | None = None
    stop_reference: float | None = None  # the selected metric at that improvement
    init: dict[str, Any] | None = None  # train.init_from: the weights the run started from (all its parts)
    best: dict[str, Any] | None = None  # {"step", "value", "metrics"} of the best validation so far
    best_weights: dict[str, torch.Tensor] | None = None  # CPU copy, for the final test
    top: list[dict[str, Any]] = field(default_factory=list)  # train.select.keep_best > 1: the kept ones, best first
    carry: dict[str, torch.Tensor] = field(default_factory=dict)  # this rank's tensors a task carries between steps

    resumed_from: int | None = None
    last_saved: int | None = None  # newest checkpoint's step: known on every rank, never read off the disk
    saved_seconds: float = 0.0  # the run's training time as the newest checkpoint records it
    last_metrics: dict[str, Any] = field(default_factory=dict)
    stopping: str | None = None  # "signal", "early stopping", "successive halving" or "time limit"
    start: float = field(default_factory=time.perf_counter)
    start_cpu: float = field(default_factory=time.process_time)
    eval_seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: {"samples": 0, "tokens": 0, "padded": 0})  # this rank
    pending: list[torch.Tensor] = field(default_factory=list)  # losses since the last sync
    last_sync: tuple[float, int, int] = (0.0, 0, 0)  # time, step, units at the last sync
    first_loss: float | None = None  # step 1's loss (a run started here), and the newest synced one:
    last_loss: float | None = None  # together they tell a run that diverged without a NaN
    reserve: timelimit.Reserve = field(default_factory=timelimit.Reserve)  # what a stop at the time limit still runs
    next_time_check: int = 0  # train.max_seconds, several processes: the step the ranks next compare clocks at
    time_mark: tuple[int, float] | None = None  # (step, the ranks' mean training seconds) then

    def seconds(self) -> float:
        """Training time of the whole run so far: earlier parts plus this one."""
        return self.seconds_before + time.perf_counter() - self.start

    def saved(self, counts: dict[str, int]) -> checkpoint.SavedLoop:
        """The part a checkpoint carries (`counts`: the whole run's, every rank's)."""
        return checkpoint.SavedLoop(parts=self.parts, counts=counts, evals_since_best=self.evals_since_best,
                                    last_eval=self.last_eval, stop_reference=self.stop_reference, init=self.init)

    def continue_from(self, saved: checkpoint.Checkpoint) -> None:
        """Continue the run `saved` is a checkpoint of, as one more part of it."""
        self.step = self.resumed_from = self.last_saved = saved.step
        self.seconds_before = self.saved_seconds = saved.train_seconds
        self.parts = saved.loop.parts + 1
        self.counts_before = dict(saved.loop.counts)
        self.evals_since_best = saved.loop.evals_since_best
        self.last_eval = saved.loop.last_eval
        self.stop_reference = saved.loop.stop_reference
        self.init = saved.loop.init


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


# ---------------------------------------------------------------------------
# Set up and restore


def finished_result(job: JobBase, accelerator: Accelerator) -> dict[str, Any] | None:
    """The result of this job's run if it has finished already, else None.  Rank 0 reads the
    run directory and tells the others, so ranks on a shared filesystem can never disagree.
    A finished run of another job in the same directory is an error, not a result."""
    run_dir = job.run_dir
    found = None
    if accelerator.is_main_process:
        result = runfiles.read_json(run_dir / runfiles.RESULT, runfiles.RESULT_FIELDS)
        if result is not None:
            config = run_dir / runfiles.CONFIG
            saved = runfiles.read_config(config) if config.is_file() else {}
            found = {"result": result, "differences": runfiles.differences(saved or {}, job.to_dict())}
    found = broadcast_object(accelerator, found)
    if found is None:
        return None
    if found["differences"]:
        raise ConfigError(
            f"{run_dir} holds a finished run of another job ({'; '.join(found['differences'][:5])}): "
            "use another train.output_dir (or train.run_id) for this one"
        )
    accelerator.print(f"{run_dir} has finished already (result: {run_dir / runfiles.RESULT}); nothing to do. "
                      "For a fresh run set train.run_id=NEW or another train.output_dir.")
    return {**found["result"], "already_finished": True}


def incompatible(job: JobBase, run_dir: Path, info: dict[str, Any], net: nn.Module | None = None,
                 selection: Selection | None = None) -> str | None:
    """Why this job cannot continue the run in `run_dir` (None: it can, or there is nothing to
    continue).  Asked before anything is written there, so that a refused job (an sst5 job on an
    sst2 run dir, a model of another shape) leaves config.yaml and every other file as they were."""
    meta, path = None, None
    try:
        for _, path in runfiles.checkpoint_files(run_dir / runfiles.CHECKPOINTS):
            try:
                meta = checkpoint.read_meta(path)  # meta.json only: the weights are read by restore
                break
            except checkpoint.UnreadableCheckpoint:
                continue  # restore skips it too, with its warning
        if meta is None:
            checkpoint.refuse_old_format(run_dir / runfiles.CHECKPOINTS)  # old format: how to convert
    except ValueError as e:  # not a checkpoint of ours, or of the old format: every rank refuses it
        return str(e)
    if meta is None:
        return None
    info = json.loads(json.dumps(info))  # as meta.json holds it (tuples as lists)
    saved = meta["task_info"]
    changed = sorted(k for k in set(saved) | set(info) if saved.get(k) != info.get(k))
    if changed:
        return (f"{path} was trained on other data than this job now reads (task info differs in {', '.join(changed)}): "
                "were the data files or data.* changed? Use another train.output_dir for the new data.")
    config = run_dir / runfiles.CONFIG
    if config.is_file():
        before = runfiles.read_config(config)
        model = [d for d in runfiles.differences(before, job.to_dict()) if d.startswith(("model.", "task:"))]
        if model:
            return (f"{path} holds another model than this job builds ({'; '.join(model[:5])}, from {config}): "
                    "use another train.output_dir (or train.run_id) for this one")
    if net is not None:  # the tensors' headers (weights, averaged weights) against the model this job builds
        with contextlib.suppress(checkpoint.UnreadableCheckpoint):  # damaged: restore skips it, with its warning
            problem = checkpoint.shape_problem(path, meta, {k: tuple(v.shape) for k, v in net.state_dict().items()})
            if problem:
                return f"{problem}: use another train.output_dir for this model, or remove that checkpoint"
    if selection is not None:
        return selection_changed(job, run_dir, info, selection)
    return None


def selection_changed(job: JobBase, run_dir: Path, info: dict[str, Any], selection: Selection) -> str | None:
    """Why the run's best/ cannot go on being compared under this job's `train.select` (another
    metric or direction: its value would be measured against another scale), or None."""
    best = run_dir / runfiles.CHECKPOINTS / checkpoint.BEST
    if not best.is_dir():
        return None
    try:
        meta = checkpoint.read_meta(best)
    except checkpoint.UnreadableCheckpoint:
        return None  # restore reads it again, and says what is wrong
    task = get_task(job.task)
    chosen = meta.get("selected_by") or {  # best/ of a run before train.select: the task's primary metric
        "metric": f"val_{info.get('primary_metric', task.primary_metric)}",
        "mode": "max" if task.higher_is_better else "min"}
    if (chosen.get("metric"), chosen.get("mode")) == (selection.key, selection.mode):
        return None
    return (f"{best} holds the weights chosen by {chosen.get('metric')} ({chosen.get('mode')}); this job selects by "
            f"{selection.key} ({selection.mode}), which would compare its evaluations with a value of another metric: "
            "set train.select back, or use another train.output_dir (or train.run_id) for the new selection")


def setup(job: JobBase, task_class: type[Task], accelerator: Accelerator, precision: str) -> Run:
    """Data, model, optimizer and batch plan; identical initial weights on every rank."""
    threads = set_threads(job.train.threads, warn=True)
    world = accelerator.num_processes
    run_dir = job.run_dir
    set_seed(job.train.seed)
    task = task_class(job, run_dir)
    splits = prepared.load(task, accelerator)  # before the run dir exists: bad data leaves no debris
    selection = Selection.of(job, task.primary(splits.info), task.higher_is_better, task.reported_metrics(splits.info))
    lock = None
    if accelerator.is_main_process:
        runfiles.make_run_dir(run_dir)  # 0750; another user's or a world-writable one is refused
        lock = runlock.RunLock.acquire(run_dir)  # one live writer per run directory; train() releases it
    try:
        # Again, now that this process holds the run directory: another copy may have finished
        # between the first look and the lock.
        finished = finished_result(job, accelerator)
        if finished is not None:
            raise AlreadyFinished(finished)
        net, warm = build_model(job, task, splits.info, accelerator)
        # Check first, write after: a job that cannot resume what is there leaves it untouched.
        refused = broadcast_object(accelerator, incompatible(job, run_dir, splits.info, net, selection)
                                   if accelerator.is_main_process else None)
        if refused:
            raise checkpoint.CheckpointMismatch(refused)
        if accelerator.is_main_process:
            save_job(job, run_dir / runfiles.CONFIG)
            runfiles.stamp_started(run_dir)  # when the run began (its first part): the W&B group's date
            task.write_run_files(run_dir, splits.info)
        accelerator.wait_for_everyone()
        dataset = task.torch_dataset(train=True)
        if dataset is None:
            splits = splits.to(accelerator.device)
        layout = batch_layout(job.data, job.train.grad_accum_steps, world)
        lengths = task.lengths(splits.train)
        plan = BatchPlan.for_data(job.data, layout, split_size(splits.train), job.train.seed, lengths)
        total_steps = plan.total_steps(job.train.epochs)
        if job.train.max_steps:
            total_steps = min(total_steps, job.train.max_steps)
        optimizer = make_optimizer(job.optim, net, accelerator.device)
        sparse_gradients = SparseGradients.keep_out_of_ddp(net, world)  # before DDP wraps the model
        budget = Budget(job.train.max_seconds) if job.train.max_seconds else None  # the schedule spans it
        scheduler = make_scheduler(job.optim, optimizer, total_steps, max(1, plan.steps_in_epoch(0)), budget)
        model = accelerator.prepare_model(torch.compile(net) if job.train.compile else net)
        if accelerator.scaler is not None:  # fp16: the optimizer steps through the loss scaler
            optimizer = accelerator.prepare_optimizer(optimizer)
        worker = worker_info(accelerator)
        tracker = Tracker(job, run_dir, job.run_id, worker, primary=(task.primary(splits.info), task.higher_is_better))
        accelerator.print(
            f"{job.name}: {world} process(es) on {worker.device} ({accelerator.distributed_type}), {threads} thread(s) "
            f"each, precision {precision}; {layout.describe()}; {plan.steps_in_epoch(0)} steps/epoch, "
            f"{total_steps} in all; run dir {run_dir}"
        )
        return Run(job, task, splits, accelerator, net, model, optimizer, scheduler, budget, plan, layout, total_steps,
                   precision, tracker, dataset, lengths, task.tokens(splits.train) if task.throughput_unit == "tokens" else None,
                   lock, sparse_gradients, selection, WeightAverage.for_job(net, job.train), warm)
    except BaseException:
        if lock:
            lock.release()
        raise


def build_model(job: JobBase, task: Task, info: dict[str, Any], accelerator: Accelerator
                ) -> tuple[nn.Module, dict[str, Any] | None]:
    """The task's model with its initial weights: the task's own, or train.init_from's (and what
    they were), before anything is written to the run directory."""
    net = task.build_model(info)
    task.init_weights(net, info)
    return net, warm_start(job, info, net, accelerator)


def warm_start(job: JobBase, info: dict[str, Any], net: nn.Module, accelerator: Accelerator) -> dict[str, Any] | None:
    """train.init_from's weights in `net` (`warmstart`), when this run starts afresh (rank 0 looks
    for a checkpoint to resume: then the source is not read at all).  Every rank reads the source;
    the ranks agree on its weights' digest, or every one of them stops with the reason."""
    if not job.train.init_from:
        return None
    resuming = runfiles.checkpoint_files(job.run_dir / runfiles.CHECKPOINTS) if accelerator.is_main_process else None
    if broadcast_object(accelerator, bool(resuming)):
        return None
    record, error = None, None
    try:
        record = warmstart.load(job, info, net)
    except (ValueError, checkpoint.CheckpointMismatch, OSError) as e:
        error = e
    outcomes = gather_objects(accelerator, (record and record["init_weights_sha1"], error and str(error)))
    if error is not None:
        raise error
    failed = next((why for _, why in outcomes if why), None)
    if failed or len({sha for sha, _ in outcomes}) > 1:
        raise checkpoint.CheckpointMismatch(failed or f"train.init_from: the ranks read different weights from "
                                            f"{job.train.init_from} (a shared filesystem's cache?); run again")
    accelerator.print(f"starting from the weights of {record['init_weights']} (step {record['init_step']})")
    return record


def restore(run: Run) -> LoopState:
    """Continue from the newest checkpoint in the run directory, wherever it was written from;
    else start fresh, each rank with its own random stream (dropout masks)."""
    state = LoopState()
    # Rank 0 chooses for every rank: on a shared filesystem ranks can list different files.
    found, best, top, refused = None, None, [], None
    try:
        if run.rank == 0:
            found = checkpoint.load_latest(run.checkpoints)
            best = checkpoint.load_best(run.checkpoints) if found else None
            top = checkpoint.read_top(run.checkpoints) if found and run.job.train.select.keep_best > 1 else []
    except checkpoint.NotACheckpoint as e:  # every rank stops with it, none waits for rank 0
        refused = e
    path, refusal = broadcast_object(run.accelerator, (found[0] if found else None, refused and str(refused)))
    if refusal:
        raise refused or checkpoint.NotACheckpoint(refusal)
    if path is None:
        seed_rank(run.job.train.seed, run.rank)
        state.init = run.warm
        return state
    saved = found[1] if found else checkpoint.load(path)
    info = json.loads(json.dumps(run.splits.info))  # as the checkpoint's meta.json holds it (tuples as lists)
    changed = sorted(k for k in set(saved.task_info) | set(info) if saved.task_info.get(k) != info.get(k))
    if changed:
        raise checkpoint.CheckpointMismatch(
            f"{path} was trained on other data than this job now reads (task info differs in {', '.join(changed)}): "
            "were the data files or data.* changed? Use another train.output_dir for the new data."
        )
    checkpoint.load_model_state(run.net, saved.model, path)
    if run.average is not None:
        run.average.load(saved.average, saved.average_meta, saved.step, path)
    run.optimizer.load_state_dict(saved.optimizer)
    run.scheduler.load_state_dict(saved.scheduler)
    if run.budget is not None:  # the schedule's clock goes on from the checkpoint's training time (the
        run.budget.spent(saved.train_seconds)  # optimizer's state already holds the rate of that moment)
    if run.accelerator.scaler is not None and saved.scaler is not None:  # fp16: the loss scale it had reached
        run.accelerator.scaler.load_state_dict(saved.scaler)
    state.continue_from(saved)
    run.tracker.resumed_at(saved.step)  # TensorBoard drops what an earlier attempt logged after it
    if len(saved.per_rank) == run.world:
        checkpoint.set_rng_state(saved.per_rank[run.rank]["rng"])
        state.carry = saved.per_rank[run.rank].get("carry", {})
    else:  # another world size: fresh streams per rank, as a fresh run draws them (never rank 0's for all)
        seed_rank(run.job.train.seed + state.step, run.rank)
    if saved.global_batch != run.layout.global_batch:
        run.plan.check_resume(saved.global_batch, path)
        run.accelerator.print(
            f"warning: {path} was trained with a global batch of {saved.global_batch} samples, this launch uses "
            f"{run.layout.global_batch} ({run.world} process(es)); set data.global_batch_size to keep the "
            "training the same at any world size"
        )
    restore_selection(run, state, best, top)
    run.accelerator.print(f"resuming from {path} (step {state.step} of {run.total_steps}, part {state.parts})")
    return state


def restore_selection(run: Run, state: LoopState, best: checkpoint.Best | None, top: list[dict[str, Any]]) -> None:
    """best/ and top/ as rank 0 read them, for every rank.  best/ is written just before the
    checkpoint of its step: one from after this checkpoint's last evaluation (a crash between the
    two) is left out, and the replayed evaluation decides again; so is a top/ entry, removed here
    (its replay writes it again)."""
    if best is not None and best.step <= (state.last_eval or 0):
        state.best = {"step": best.step, "value": best.value, "metrics": best.metrics}
        state.best_weights = best.model
    if run.rank == 0 and top:
        state.top = run.selection.top([e for e in top if e["step"] <= (state.last_eval or 0)],
                                      run.job.train.select.keep_best)
        checkpoint.prune_top(run.checkpoints, {e["step"] for e in state.top})
    state.best, state.top = broadcast_object(run.accelerator, (state.best, state.top))
    if state.best is not None and state.best_weights is None:
        state.best_weights = checkpoint.load_best_weights(run.checkpoints, state.best["step"])
    if state.stop_reference is None and state.best is not None:  # a checkpoint from before min_delta
        state.stop_reference = state.best["value"]


def seed_rank(seed: int, rank: int) -> None:
    """Random streams of one rank: every generator training draws from, different per rank."""
    mixed = (seed * 1_000_003 + rank) % 2**32
    torch.manual_seed(mixed)
    random.seed(mixed)
    np.random.seed(mixed)


# ---------------------------------------------------------------------------
# One step


def epoch_batches(run: Run, epoch: int, start: int) -> Iterator[list[tuple[Batch, torch.Tensor]]]:
    """This rank's (batch, sample indices) micro-batches of each step of an epoch, from `start`."""
    steps = run.plan.steps(epoch, run.rank, start)
    if run.dataset is None:
        for micro in steps:
            yield [(run.task.batch(run.splits.train, idx), idx) for idx in micro]
        return
    # The classic path: a DataLoader over the same indices, grouped back into steps.  Its own
    # generator: an iterator draws a seed at its start, which must not shift the global stream
    # (dropout) by where a run started or resumed.
    plan = list(steps)
    loader = iter(torch.utils.data.DataLoader(
        run.dataset, batch_sampler=[idx.tolist() for micro in plan for idx in micro],
        num_workers=run.task.loader_workers(),
        generator=torch.Generator().manual_seed(run.job.train.seed + epoch),
    ))
    device = run.accelerator.device
    for micro in plan:
        yield [(tuple(t.to(device, non_blocking=True) for t in next(loader)), idx) for idx in micro]


def train_step(run: Run, batches: list[tuple[Batch, torch.Tensor]], state: LoopState) -> torch.Tensor:
    """Forward and backward over this rank's micro-batches, then one optimizer step.
    Gradients are synchronised once, on the last micro-batch."""
    accelerator, model, n = run.accelerator, run.model, len(batches)
    total = None
    for i, (batch, indices) in enumerate(batches):
        count(run, state, indices)
        sync_context = accelerator.no_sync(model) if i < n - 1 else contextlib.nullcontext()
        with sync_context:
            carry = {k.split("/", 1)[1]: to_device(v, accelerator.device) for k, v in state.carry.items()
                     if k.startswith(f"{i}/")}
            loss, carry = run.task.step_loss(model, batch, carry, run.splits.info)
            state.carry.update({f"{i}/{k}": v for k, v in carry.items()})  # keyed by micro-batch slot
            scaled = loss / n if n > 1 else loss
            # Accelerate's backward only adds work here unless fp16 needs its loss scaler.
            accelerator.backward(scaled) if accelerator.scaler is not None else scaled.backward()
        total = loss.detach() if total is None else total + loss.detach()
    if run.sparse_gradients is not None:
        run.sparse_gradients.all_reduce()
    if run.job.optim.grad_clip:
        accelerator.clip_grad_norm_(model.parameters(), run.job.optim.grad_clip)
    run.optimizer.step()
    if run.average is not None:
        run.average.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total / n if n > 1 else total


def count(run: Run, state: LoopState, indices: torch.Tensor) -> None:
    """Samples, real tokens and padded tokens of one micro-batch (CPU bookkeeping, no sync)."""
    state.counts["samples"] += len(indices)
    if run.tokens is not None:
        state.counts["tokens"] += int(run.tokens[indices].sum())
    if run.lengths is not None and len(indices):
        state.counts["padded"] += len(indices) * int(run.lengths[indices].max())


def units(run: Run, counts: dict[str, int]) -> int:
    return counts["tokens"] if run.unit == "tokens" else counts["samples"]


# ---------------------------------------------------------------------------
# Sync, save


def sync_due(run: Run, state: LoopState) -> bool:
    step, t = state.step, run.job.train
    return step % t.log_every == 0 or step % t.checkpoint_every == 0 or step == run.total_steps or (
        t.eval_every_steps is not None and step % t.eval_every_steps == 0)


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
    began = time.perf_counter()
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


def sync(run: Run, state: LoopState, stop: threading.Event, progress: Progress) -> None:
    """One all-reduce carries the last loss, the NaN check, stop requests and the samples seen
    (the row's `samples`, an x axis for `compare`).  Only at steps every rank shares: a signal
    reaches ranks at different steps, so it is polled here."""
    losses = torch.stack(state.pending).float()
    state.pending.clear()
    limit = run.job.train.max_seconds
    late = past_budget(run, state)  # every rank learns it if any rank is past the limit
    local = torch.stack([losses[-1], (~torch.isfinite(losses)).sum().float(),
                         torch.tensor(float(stop.is_set()), device=losses.device),
                         torch.tensor(float(late), device=losses.device),
                         torch.tensor(state.seconds(), dtype=torch.float32, device=losses.device),
                         torch.tensor(reserved(run, state), dtype=torch.float32, device=losses.device),
                         torch.tensor(float(state.counts["samples"]), dtype=torch.float32, device=losses.device)])
    total = run.accelerator.reduce(local.clone(), "sum") if run.world > 1 else local
    if run.budget is not None:  # the ranks' mean training time: one learning rate for all replicas
        run.budget.spent(float(total[4]) / run.world)
    if limit is not None and run.world > 1 and (state.time_mark or (-1,))[0] != state.step:
        plan_time_check(state, float(total[4]) / run.world, limit - float(total[5]) / run.world)
    if float(total[1]) > 0:
        bad = (~torch.isfinite(losses)).nonzero()
        first = state.step - len(losses) + 1
        where = f"step {first + int(bad[0])}" if len(bad) else "another rank"
        raise NonFiniteLoss(
            f"loss is {float(losses[bad[0]]) if len(bad) else 'NaN/inf'} at {where} (between steps {first} and "
            f"{state.step}); stopped. The last good checkpoint in {run.checkpoints} is kept: lower optim.lr or set "
            "optim.grad_clip."
        )
    if state.first_loss is None and state.step == len(losses):
        state.first_loss = float(losses[0])
    state.last_loss = float(total[0]) / run.world
    now, done = time.perf_counter(), units(run, state.counts)
    last_time, last_step, last_done = state.last_sync if state.last_sync[0] else (state.start, state.resumed_from or 0, 0)
    state.last_sync = (now, state.step, done)
    epoch, offset = run.plan.locate(state.step)
    row = {
        "loss": float(losses[-1]),
        "global_loss": float(total[0]) / run.world,
        "lr": run.scheduler.get_last_lr()[0],
        f"{run.unit}_per_s": (done - last_done) / max(now - last_time, 1e-9),
        "epoch": epoch + offset / max(1, run.plan.steps_in_epoch(epoch)),
        "samples": state.counts_before.get("samples", 0) + round(float(total[6])),  # every rank's, the whole run
    }
    run.tracker.log(state.step, row)
    progress.update(state.step, row)
    if float(total[2]) > 0:
        state.stopping = "signal"
    elif float(total[3]) > 0:
        state.stopping = "time limit"  # a finished run: concluded as at its last step


def save(run: Run, state: LoopState, force: bool = False) -> None:
    """A checkpoint of the current step: every rank's random state and carried tensors, the loop
    state.  Once per step, unless `force`d (an evaluation at a step a stopped run had already saved)."""
    if state.last_saved == state.step and not force:
        return
    began = time.perf_counter()
    carry = {k: v.detach().to("cpu") for k, v in state.carry.items()}
    per_rank = gather_objects(run.accelerator, {"rng": checkpoint.rng_state(), "carry": carry,
                                                "counts": dict(state.counts)})
    seconds = broadcast_object(run.accelerator, state.seconds())  # one number for every rank's result
    if run.lock:
        run.lock.check()  # a requeued copy of this job may have taken the run over: never write beside it
        scaler = run.accelerator.scaler
        checkpoint.save(run.checkpoints, checkpoint.Checkpoint(
            step=state.step,
            model=run.net.state_dict(),
            optimizer=run.optimizer.state_dict(),
            scheduler=run.scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            per_rank=[{"rng": r["rng"], "carry": r["carry"]} for r in per_rank],
            world_size=run.world,
            global_batch=run.layout.global_batch,
            train_seconds=seconds,
            loop=state.saved(total_counts(state, [r["counts"] for r in per_rank])),
            task_info=run.splits.info,
            config=runfiles.shareable(run.job.to_dict()),
            **averaged_state(run),
        ), run.job.train.keep_checkpoints)
    run.accelerator.wait_for_everyone()
    state.last_saved, state.saved_seconds = state.step, seconds
    state.reserve.pause(time.perf_counter() - began)  # not a step's time


def total_counts(state: LoopState, per_rank: list[dict[str, int]]) -> dict[str, int]:
    """Samples/tokens/padded tokens of the whole run: earlier parts plus every rank of this one."""
    return {k: state.counts_before.get(k, 0) + sum(c[k] for c in per_rank) for k in ("samples", "tokens", "padded")}


# ---------------------------------------------------------------------------
# Evaluation and model selection


def validation_due(run: Run, state: LoopState, epoch: int, epoch_end: int) -> bool:
    """Evaluate now?  Every `train.eval_every_steps` steps, else at the end (step `epoch_end`)
    of every `train.eval_every_epochs`-th epoch; never twice at one step."""
    if state.last_eval == state.step or state.step == 0:
        return False
    t = run.job.train
    if t.eval_every_steps is not None:
        return state.step % t.eval_every_steps == 0
    return state.step == epoch_end and (epoch + 1) % t.eval_every_epochs == 0


def evaluate(run: Run, split: Split, prefix: str, step: int) -> dict[str, Any]:
    """Metrics over every sample of `split` exactly once: each rank its batches, sums all-reduced.

    Runs the plain module, not the DDP wrapper: ranks may run different numbers of
    batches, and a DDP forward could wait on collectives the others never make."""
    accelerator, task, net = run.accelerator, run.task, run.net
    broadcast_buffers(net, run.world)
    batches = eval_batches_for(run.job.data, split_size(split), run.rank, run.world, task.lengths(split))
    sums = evaluate_sums(task, net, split, batches, autocast(accelerator.device, run.precision), run.splits.info)
    keys = sorted(sums)  # the same order on every rank
    if run.world > 1:  # a rank with no batch (a split smaller than the world) has no sums: agree on the keys
        keys = sorted(set().union(*gather_objects(accelerator, keys)))
    none = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    local = torch.stack([torch.as_tensor(sums.get(k, none), device=accelerator.device) for k in keys]) if keys else \
        torch.zeros(0, device=accelerator.device)
    total = accelerator.reduce(local.clone(), "sum") if run.world > 1 else local
    shard = task.metrics(dict(zip(keys, local.tolist())), run.splits.info, prefix=f"{prefix}/shard_") if batches else {}
    overall = task.metrics(dict(zip(keys, total.tolist())), run.splits.info, prefix=f"{prefix}_")
    run.tracker.log(step, {**{k.replace(f"{prefix}_", f"{prefix}/", 1): v for k, v in overall.items()}, **shard})
    accelerator.print(f"step {step}: " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in overall.items()))
    return overall


def averaged(run: Run) -> contextlib.AbstractContextManager[None]:
    """The averaged weights in `run.net` while evaluating (train.ema / train.ntasgd), else the raw ones."""
    return run.average.swapped() if run.average is not None else contextlib.nullcontext()


def averaged_state(run: Run) -> dict[str, Any]:
    """The checkpoint's averaged weights and their counts (nothing when averaging is off)."""
    if run.average is None:
        return {}
    tensors, meta = run.average.state()
    return {"average": tensors, "average_meta": meta}


def validate(run: Run, state: LoopState) -> None:
    """Evaluate (with the averaged weights where averaging is on), keep the best, start NT-ASGD's
    average when validation stalls, and checkpoint the outcome."""
    with averaged(run):
        judge(run, state)
    if run.splits.val is None:
        return
    if run.average is not None and run.average.after_validation(state.step, state.evals_since_best):
        run.accelerator.print(f"step {state.step}: validation has not improved for {run.average.nonmono} "
                              "evaluation(s): NT-ASGD averages the weights from here on")
    save(run, state, force=True)  # the selection state and the weights it refers to stay together


def judge(run: Run, state: LoopState) -> None:
    """Evaluate, and with a validation split keep the best weights by the selected metric
    (`train.select`, the rule in `selection`: ties to the lower loss, then the later step), the
    k best with `keep_best`, and count evaluations without improvement (early stopping).  Without
    one, the test split is evaluated as training goes (the tutorial's way) and the last weights
    are the result."""
    began = time.perf_counter()
    if run.splits.val is None:
        state.last_metrics = evaluate(run, run.splits.test, "test", state.step)
        state.last_eval = state.step  # no halving on test metrics: a sweep's points always have validation data
        evaluated(state, time.perf_counter() - began)
        return
    metrics = evaluate(run, run.splits.val, "val", state.step)
    state.last_eval = state.step
    if run.accelerator.is_main_process:
        for name, table in run.task.evaluation_tables(run.net, run.splits.info, state.step, run.run_dir).items():
            run.tracker.log_table(name, table["columns"], table["rows"])
    select = run.selection
    candidate = {"step": state.step, "value": select.value(metrics), "metrics": metrics}
    if select.better(candidate, state.best):
        state.best = candidate
        state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in run.net.state_dict().items()}
        if run.lock:
            run.lock.check()
            checkpoint.save_best(run.checkpoints, kept(run, candidate, state.best_weights))
    keep_best(run, state, candidate)
    if select.improves(candidate["value"], state.stop_reference):
        state.stop_reference, state.evals_since_best = candidate["value"], 0
    else:
        state.evals_since_best += 1
        patience = run.job.train.early_stopping.patience
        if patience is not None and state.evals_since_best >= patience:
            state.stopping = "early stopping"
            since = f" by more than {select.min_delta:g}" if select.min_delta else ""
            best = f" (best {state.best['value']:.4f} at step {state.best['step']})" if state.best else ""
            run.accelerator.print(f"early stopping at step {state.step}: {select.key} has not improved on "
                                  f"{state.stop_reference if state.stop_reference is not None else float('nan'):.4f}"
                                  f"{since} in {patience} evaluation(s){best}")
    halve(run, state, metrics, "val")
    evaluated(state, time.perf_counter() - began)


def evaluated(state: LoopState, seconds: float) -> None:
    """An evaluation took `seconds`: evaluation time, not a step's, and what the final one is expected to take."""
    state.eval_seconds += seconds
    state.reserve.pause(seconds)
    state.reserve.evaluated(seconds)


def kept(run: Run, entry: dict[str, Any], weights: dict[str, torch.Tensor]) -> checkpoint.Best:
    """best/'s (or a top/ entry's) contents: the weights, the evaluation and how it was chosen."""
    return checkpoint.Best(**entry, model=weights, task_info=run.splits.info,
                           config=runfiles.shareable(run.job.to_dict()), selected_by=run.selection.describe())


def keep_best(run: Run, state: LoopState, candidate: dict[str, Any]) -> None:
    """train.select.keep_best > 1: the k best evaluations' weights in checkpoints/top/ (rank 0
    writes the new one atomically, then removes the one it displaced)."""
    k = run.job.train.select.keep_best
    if k == 1:
        return
    ranked = run.selection.top(state.top + [candidate], k)
    if candidate not in ranked:
        return
    state.top = [{"step": e["step"], "value": e["value"], "metrics": e["metrics"]} for e in ranked]
    if run.lock:
        run.lock.check()
        weights = state.best_weights if state.best is candidate else \
            {name: v.detach().to("cpu") for name, v in run.net.state_dict().items()}
        checkpoint.save_top(run.checkpoints, kept(run, candidate, weights), {e["step"] for e in ranked})


def halve(run: Run, state: LoopState, metrics: dict[str, Any], split: str) -> None:
    """A sweep point under successive halving (`halving`) stops at a rung where it is among the
    worst points: rank 0 decides from the sweep's shared files, every rank stops."""
    cfg = run.job.train.halving
    if cfg is None or state.stopping:
        return
    key = f"{split}_{run.task.primary(run.splits.info)}"
    reason = None
    if run.accelerator.is_main_process:
        reason = halving.record_and_decide(run.run_dir, state.step, key, float(metrics[key]),
                                           run.task.higher_is_better, cfg.min_steps, cfg.eta,
                                           final=state.step >= run.total_steps)
    reason = broadcast_object(run.accelerator, reason)
    if reason:
        state.stopping = "successive halving"
        run.accelerator.print(reason)


# ---------------------------------------------------------------------------
# The end


def interrupted(run: Run, state: LoopState) -> dict[str, Any]:
    """Stopped by a signal: the checkpoint is on disk; no result.json (the run is not finished)."""
    result = {"interrupted": True, "steps": state.step, "run_dir": str(run.run_dir),
              "train_seconds": round(state.seconds(), 3)}
    run.tracker.finish(result)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return result


def conclude(run: Run, state: LoopState) -> dict[str, Any]:
    """The last weights saved, the best ones tested once, and the result written."""
    if run.splits.val is not None and state.last_eval != state.step:
        validate(run, state)  # the final weights compete too
    save(run, state)
    seconds = state.saved_seconds  # result.json and the final checkpoint tell the same training time
    cpu_seconds = time.process_time() - state.start_cpu
    per_rank = gather_objects(run.accelerator, dict(state.counts))
    counts = total_counts(state, per_rank)
    val_metrics: dict[str, Any] = {}
    if run.splits.val is not None and state.best is not None:
        checkpoint.load_model_state(run.net, state.best_weights, run.checkpoints / checkpoint.BEST)
        val_metrics = state.best["metrics"]
    began = time.perf_counter()
    reuse = run.splits.val is None and state.last_eval == state.step and state.last_metrics
    if run.splits.test is None:  # no test split (a corpus cut into train and validation only): said, not faked
        test_metrics = {"test_split": "none: the data has no test split; the metrics are validation's"}
    else:
        with averaged(run) if run.splits.val is None else contextlib.nullcontext():  # else run.net holds the best weights
            test_metrics = state.last_metrics if reuse else evaluate(run, run.splits.test, "test", state.step)
    test_seconds = time.perf_counter() - began  # after train_seconds: not a part of it
    broadcast_buffers(run.net, run.world)
    digests = gather_objects(run.accelerator, weights_digest(run.net))  # equal digests: the ranks trained one model
    primary = f"{'val' if run.splits.test is None else 'test'}_{run.task.primary(run.splits.info)}"
    result: dict[str, Any] = {
        **val_metrics,
        **test_metrics,
        "primary_metric": primary,
        "higher_is_better": run.task.higher_is_better,
        "best_step": state.best["step"] if state.best else None,
        # How best_step was chosen (train.select), and with keep_best the steps kept in checkpoints/top/
        "selected_by": run.selection.describe() if run.splits.val is not None else None,
        **({"kept_steps": [e["step"] for e in state.top]} if run.job.train.select.keep_best > 1 else {}),
        **({"init_from": state.init} if run.job.train.init_from else {}),
        "stopped_early": state.stopping in ("early stopping", "successive halving"),
        "stopped_at_time_limit": state.stopping == "time limit",
        "epochs": round(state.step / max(1, run.plan.steps_in_epoch(0)), 4),
        "steps": state.step,
        "world_size": run.world,
        # A token budget decides the batches where one is set: a sample count would be made up.
        "global_batch_size": None if run.layout.max_tokens else run.layout.global_batch,
        "global_batch_max_tokens": run.layout.max_tokens and run.layout.max_tokens * run.layout.world * run.layout.accum,
        "grad_accum_steps": run.layout.accum,
        "mixed_precision": run.precision,
        "train_seconds": round(seconds, 3),
        "parts": state.parts,
        "eval_seconds": round(state.eval_seconds, 3),  # evaluations within train_seconds (this part)
        "test_seconds": round(test_seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),  # this process, this part: robust on a busy machine
        "samples_per_second": round(counts["samples"] / max(seconds, 1e-9), 1),
        "resumed_from_step": state.resumed_from,
        "interrupted": False,
        "run_dir": str(run.run_dir),
        "weights_sha1_per_rank": digests,
        **evaluated_weights(run, state),
    }
    if run.unit == "tokens":
        result["tokens_per_second"] = round(counts["tokens"] / max(seconds, 1e-9), 1)
    if run.lengths is not None and counts["padded"]:
        result["padding_fraction"] = round(1 - counts["tokens"] / counts["padded"], 4) if counts["tokens"] else None
    result["versions"] = about.versions()
    result["diverged"] = diverged(state)
    if run.accelerator.is_main_process:
        if result["diverged"]:
            warnings.warn(f"training diverged: the train loss ended at {state.last_loss:.4g}, over {DIVERGED}x its "
                          f"first value {state.first_loss:.4g} (no NaN, so it ran on): lower optim.lr or set optim.grad_clip")
        extra = run.task.finish(run.net, run.splits, run.run_dir)
        images, tables = extra.pop("images", {}), extra.pop("tables", {})
        result.update(extra)
        if images:
            run.tracker.log_images(state.step, images)
        for name, table in tables.items():
            run.tracker.log_table(name, table["columns"], table["rows"])
        run.lock.check()
        runfiles.write_json(run.run_dir / runfiles.RESULT, result)
        if run.tracker.logs_to_wandb:
            selected = run.splits.val is not None and state.best is not None  # else the last weights are the model
            artifact = checkpoint.stage_artifact(run.run_dir, selected)
            run.tracker.log_model(artifact, "best" if selected else "latest", {primary: result.get(primary)})
    run.tracker.finish(result)
    run.accelerator.wait_for_everyone()
    # Leave the process group cleanly: without it ranks sometimes abort at interpreter
    # exit ("terminate called without an active exception") after finishing their work.
    run.accelerator.end_training()
    return result


def evaluated_weights(run: Run, state: LoopState) -> dict[str, Any]:
    """Which weights validation and test used, and (averaging on) every rank's digest of the average."""
    if run.average is None:
        return {"evaluated_weights": "raw"}
    step = state.best["step"] if run.splits.val is not None and state.best else state.step
    return {"evaluated_weights": run.average.describe(step),
            "averaged_weights_sha1_per_rank": gather_objects(run.accelerator, averaging.digest(run.average))}


DIVERGED = 10  # a final loss this many times the first one: the run diverged


def diverged(state: LoopState) -> bool:
    """The loss ended far above where it started (a run resumed from a checkpoint has no
    first loss here, and is not judged)."""
    return state.first_loss is not None and state.last_loss is not None and \
        state.last_loss > DIVERGED * max(state.first_loss, 1e-12)


# ---------------------------------------------------------------------------
# Digests


def weights_digest(model: nn.Module) -> str:
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
