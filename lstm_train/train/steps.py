"""One step of the loop and what follows it at chosen steps: this rank's micro-batches
(`epoch_batches`), forward/backward/optimizer step (`train_step`), the one all-reduce of a
logging step (`sync`) and the checkpoint (`save`).

These are the lines every step runs, so they stay free of start-up and evaluation: a reader
timing or changing the step finds all of it here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch

from .. import checkpoint, runfiles
from ..data.ragged import to_device
from ..distributed import broadcast_object, gather_objects
from ..progress import Progress
from ..tasks.base import Batch
from .deadline import past_budget, plan_time_check, reserved
from .loop_state import LoopState, NonFiniteLoss, Run


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


def sync_due(run: Run, state: LoopState) -> bool:
    step, t = state.step, run.job.train
    return step % t.log_every == 0 or step % t.checkpoint_every == 0 or step == run.total_steps or (
        t.eval_every_steps is not None and step % t.eval_every_steps == 0)


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


def averaged_state(run: Run) -> dict[str, Any]:
    """The checkpoint's averaged weights and their counts (nothing when averaging is off)."""
    if run.average is None:
        return {}
    tensors, meta = run.average.state()
    return {"average": tensors, "average_meta": meta}


def total_counts(state: LoopState, per_rank: list[dict[str, int]]) -> dict[str, int]:
    """Samples/tokens/padded tokens of the whole run: earlier parts plus every rank of this one."""
    return {k: state.counts_before.get(k, 0) + sum(c[k] for c in per_rank) for k in ("samples", "tokens", "padded")}
