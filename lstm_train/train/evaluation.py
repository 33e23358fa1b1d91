"""Evaluation and model selection: when to validate, the metrics over a split (every sample once,
sums all-reduced), the best weights and the k best kept by `train.select`, early stopping and
successive halving.

What the loop does with a validation is its own concern, with its own rules (`selection`);
kept here so that the loop shows only where it validates, and this module shows what that means.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from .. import checkpoint, halving, runfiles
from ..data.batching import eval_batches_for
from ..distributed import autocast, broadcast_buffers, broadcast_object, gather_objects
from ..tasks.base import Split, evaluate_sums, split_size
from .loop_state import LoopState, Run
from .steps import save


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
    began, began_cpu = time.perf_counter(), time.process_time()
    if run.splits.val is None:
        state.last_metrics = evaluate(run, run.splits.test, "test", state.step)
        state.last_eval = state.step  # no halving on test metrics: a sweep's points always have validation data
        evaluated(state, time.perf_counter() - began, time.process_time() - began_cpu)
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
    evaluated(state, time.perf_counter() - began, time.process_time() - began_cpu)


def evaluated(state: LoopState, seconds: float, cpu_seconds: float) -> None:
    """An evaluation took `seconds` (and `cpu_seconds` of this process): evaluation time, not a
    step's, and what the final one is expected to take."""
    state.eval_seconds += seconds
    state.eval_cpu_seconds += cpu_seconds
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
