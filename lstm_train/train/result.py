"""The end of a run: the result a finished run leaves (`conclude`: the best weights tested once,
result.json, the W&B summary and model artifact), or what a run stopped by a signal says
(`interrupted`).

Every key of result.json is made here, so a reader looking up one finds where it comes from;
`conclude` names its steps in the order they run (their collectives must run in the same order
on every rank).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

from torch import nn

from .. import about, artifact, averaging, checkpoint, runfiles
from ..distributed import broadcast_buffers, gather_objects
from .evaluation import averaged, evaluate, validate
from .loop_state import LoopState, Run
from .steps import save, total_counts


def interrupted(run: Run, state: LoopState) -> dict[str, Any]:
    """Stopped by a signal: the checkpoint is on disk; no result.json (the run is not finished)."""
    result = {"interrupted": True, "steps": state.step, "run_dir": str(run.run_dir),
              "train_seconds": round(state.seconds(), 3)}
    return leave(run, result)


def conclude(run: Run, state: LoopState) -> dict[str, Any]:
    """The last weights saved, the best ones tested once, and the result written."""
    if run.splits.val is not None and state.last_eval != state.step:
        validate(run, state)  # the final weights compete too
    cpu_seconds = time.process_time() - state.start_cpu  # as train_seconds: up to the final checkpoint
    save(run, state)
    seconds = state.saved_seconds  # result.json and the final checkpoint tell the same training time
    counts = total_counts(state, gather_objects(run.accelerator, dict(state.counts)))
    val_metrics = best_weights_in_place(run, state)
    began = time.perf_counter()
    test_metrics = final_test(run, state)
    test_seconds = time.perf_counter() - began  # after train_seconds: not a part of it
    broadcast_buffers(run.net, run.world)
    digests = gather_objects(run.accelerator, weights_digest(run.net))  # equal digests: the ranks trained one model
    result: dict[str, Any] = {
        **val_metrics,
        **test_metrics,
        **summary(run, state, seconds),
        "test_seconds": round(test_seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),  # this process, this part: robust on a busy machine
        "samples_per_second": round(counts["samples"] / max(seconds, 1e-9), 1),
        "resumed_from_step": state.resumed_from,
        "interrupted": False,
        "run_dir": str(run.run_dir),
        "weights_sha1_per_rank": digests,
        **evaluated_weights(run, state),
    }
    result.update(throughput(run, counts, seconds))
    result["versions"] = about.versions()
    result["diverged"] = diverged(state)
    if run.accelerator.is_main_process:
        publish(run, state, result)
    return leave(run, result)


def best_weights_in_place(run: Run, state: LoopState) -> dict[str, Any]:
    """Model selection's weights in `run.net` for the final test, and their validation metrics
    (nothing without a validation split, or before any validation: the last weights stay)."""
    if run.splits.val is None or state.best is None:
        return {}
    checkpoint.load_model_state(run.net, state.best_weights, run.checkpoints / checkpoint.BEST)
    return state.best["metrics"]


def final_test(run: Run, state: LoopState) -> dict[str, Any]:
    """The test split's metrics, evaluated once: of the best weights (`best_weights_in_place`), or
    without validation data of the (averaged) last weights, reusing an evaluation of this very step."""
    if run.splits.test is None:  # no test split (a corpus cut into train and validation only): said, not faked
        return {"test_split": "none: the data has no test split; the metrics are validation's"}
    reuse = run.splits.val is None and state.last_eval == state.step and state.last_metrics
    with averaged(run) if run.splits.val is None else contextlib.nullcontext():  # else run.net holds the best weights
        return state.last_metrics if reuse else evaluate(run, run.splits.test, "test", state.step)


def summary(run: Run, state: LoopState, seconds: float) -> dict[str, Any]:
    """What the run was and how it went: the metric it is judged by, how it was selected and
    stopped, its size, batches and precision, and its training time (`seconds`, as the final
    checkpoint records it)."""
    return {
        "primary_metric": primary_metric(run),
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
        "eval_cpu_seconds": round(state.eval_cpu_seconds, 3),  # their CPU, within train_cpu_seconds
    }


def primary_metric(run: Run) -> str:
    """The result's key a sweep ranks by: the test metric, or validation's where there is no test split."""
    return f"{'val' if run.splits.test is None else 'test'}_{run.task.primary(run.splits.info)}"


def throughput(run: Run, counts: dict[str, int], seconds: float) -> dict[str, Any]:
    """Tokens per second (a task counting tokens) and the padding fraction (a task with lengths)."""
    found: dict[str, Any] = {}
    if run.unit == "tokens":
        found["tokens_per_second"] = round(counts["tokens"] / max(seconds, 1e-9), 1)
    if run.lengths is not None and counts["padded"]:
        found["padding_fraction"] = round(1 - counts["tokens"] / counts["padded"], 4) if counts["tokens"] else None
    return found


def publish(run: Run, state: LoopState, result: dict[str, Any]) -> None:
    """Rank 0: the divergence warning, the task's own outputs (added to `result`), result.json, and
    with W&B the model artifact (model selection's weights, or the last ones)."""
    primary = result["primary_metric"]  # as `summary` made it, whatever the task's outputs hold
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
        staged = artifact.stage_artifact(run.run_dir, selected)
        run.tracker.log_model(staged, "best" if selected else "latest", {primary: result.get(primary)})


def leave(run: Run, result: dict[str, Any]) -> dict[str, Any]:
    """Close the tracker and leave the process group together, then hand back `result`."""
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


def weights_digest(model: nn.Module) -> str:
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
