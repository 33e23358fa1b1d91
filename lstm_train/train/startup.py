"""Start-up and resume: everything the loop needs before its first step.

`setup` builds the run (data, model, optimizer, batch plan) after checking, before anything is
written, that this job may use the run directory: a finished run is returned as it is
(`finished_result`), a run of another job, data or model is refused (`incompatible`).
`restore` then continues the newest checkpoint, chosen by rank 0 for every rank, or starts
afresh.  Kept apart from the loop because all of it runs once per process, and most of it is
about the run directory rather than about training.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from .. import checkpoint, runfiles, runlock, warmstart
from ..averaging import WeightAverage
from ..config import JobBase, save_job
from ..data.store import prepared
from ..data.batching import BatchPlan
from ..distributed import (
    batch_layout, broadcast_object, gather_objects, set_threads, SparseGradients, worker_info,
)
from ..optim import Budget, make_optimizer, make_scheduler
from ..schema import ConfigError
from ..selection import Selection
from ..tasks import get_task
from ..tasks.base import Task, split_size
from ..tracking import Tracker
from .loop_state import AlreadyFinished, LoopState, Run


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
        for _, path in checkpoint.checkpoint_files(run_dir / checkpoint.CHECKPOINTS):
            try:
                meta = checkpoint.read_meta(path)  # meta.json only: the weights are read by restore
                break
            except checkpoint.UnreadableCheckpoint:
                continue  # restore skips it too, with its warning
        if meta is None:
            checkpoint.refuse_old_format(run_dir / checkpoint.CHECKPOINTS)  # old format: how to convert
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
    best = run_dir / checkpoint.CHECKPOINTS / checkpoint.BEST
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
    resuming = checkpoint.checkpoint_files(job.run_dir / checkpoint.CHECKPOINTS) if accelerator.is_main_process \
        else None
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
