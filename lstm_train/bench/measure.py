"""What every loop in the bench shares: the batches, what they count, precision, evaluation, FLOPs.

Every loop is measured the same way: wall and CPU seconds of the training loop alone
(evaluation timed apart), the number of units trained (samples, or tokens where the
task declares `throughput_unit = "tokens"`), and the task's primary test metric.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from pathlib import Path
from typing import Any

import torch

from ..data.batching import BatchPlan, eval_batches_for
from ..distributed import autocast as precision_autocast
from ..distributed import batch_layout, resolve_precision
from ..tasks import get_task
from ..tasks.base import Split, Task, evaluate_sums, split_size


def batch_plan(job: Any, task: Task, split: Split, world: int = 1) -> BatchPlan:
    """The batch plan lstm_train's loop follows for this job on `world` processes (`train.startup.setup`)."""
    layout = batch_layout(job.data, job.train.grad_accum_steps, world)
    return BatchPlan.for_data(job.data, layout, split_size(split), job.train.seed, task.lengths(split))


def global_batches(plan: BatchPlan, steps: int) -> list[torch.Tensor]:
    """The sample indices of the first `steps` optimizer steps (all processes), epoch after epoch."""
    out: list[torch.Tensor] = []
    epoch = 0
    while len(out) < steps:
        out += plan.global_batches(epoch)[: steps - len(out)]
        epoch += 1
    return out


def units(task: Task, split: Split, indices: torch.Tensor) -> int:
    """What a batch counts for throughput: its samples, or its tokens."""
    if task.throughput_unit == "tokens":
        counts = task.tokens(split)
        if counts is not None:
            return int(counts[indices.cpu()].sum())
    return len(indices)


def trained_units(task: Task, split: Split, plan: BatchPlan, steps: int) -> tuple[int, int]:
    """(units, samples) the first `steps` optimizer steps of the plan train, all processes together."""
    batches = global_batches(plan, steps)
    return sum(units(task, split, b) for b in batches), sum(len(b) for b in batches)


def precision_of(job: Any, device: torch.device) -> str:
    """The precision lstm_train trains this job in on `device` (`train.mixed_precision: auto` resolved)."""
    return resolve_precision(job.train.mixed_precision, get_task(job.task).precision, device.type == "cpu")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast lstm_train's loop applies for `precision` ("no", "bf16", "fp16"): the one mapping."""
    return precision_autocast(device, precision)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(task: Task, model: torch.nn.Module, split: Split, device: torch.device, precision: str,
             info: dict[str, Any], batch_size: int | None = None) -> dict[str, float]:
    """The task's test metrics of a model trained outside lstm_train's loop (floor, Lightning):
    the loop's own evaluation pass (`tasks.base.evaluate_sums`) over the loop's batches."""
    batches = eval_batches_for(task.job.data, split_size(split), 0, 1, task.lengths(split))
    on_device = (b.to(device) for b in batches)
    sums = evaluate_sums(task, model, split, on_device, autocast(device, precision), info)
    return task.metrics({k: float(v) for k, v in sums.items()}, info, prefix="test_")


def held_out(splits: Any) -> tuple[str, Split]:
    """The split the peers are scored on, and its name: the test split, or validation where the
    data has none (a corpus split into train and validation only, as jobs/shakespeare_char.yaml is);
    the run itself reports its primary metric on the same split (`primary_metric` in result.json)."""
    return ("test", splits.test) if splits.test is not None else ("val", splits.val)


def primary(task: Task, metrics: dict[str, Any], info: dict[str, Any] | None = None) -> float | None:
    """The task's primary test metric from a metrics dict (of a run on data with `info`) or
    result.json (which names it); None where it is absent."""
    value = metrics.get(metrics.get("primary_metric") or f"test_{task.primary(info or {})}")
    return None if value is None else float(value)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu ({line.split(':', 1)[1].strip()}, {os.cpu_count()} cores)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} cores)"


def summarise(runs: list[dict[str, Any]], flops_per_sample: float | None) -> dict[str, Any]:
    """Medians over repeats of one loop: throughput in units/s, epoch and CPU seconds, the metric."""
    epoch_s = statistics.median(r["epoch_s"] for r in runs)
    cpu_s = statistics.median(r["cpu_s"] for r in runs)
    first = runs[0]
    out = {
        "per_s": round(first["units"] / max(epoch_s, 1e-9), 1),
        "per_cpu_s": round(first["units"] / max(cpu_s, 1e-9), 1),  # this process's CPU time: steadier when busy
        "epoch_s": round(epoch_s, 6),
        "cpu_s": round(cpu_s, 6),
        "eval_s": round(statistics.median(r["eval_s"] for r in runs), 6),
        "metric": median_or_none([r["metric"] for r in runs]),
        "steps": first["steps"],
        "units": first["units"],
        "samples": first["samples"],
        "epoch_s_all": [round(r["epoch_s"], 3) for r in runs],
    }
    if flops_per_sample:
        out["gflops"] = round(flops_per_sample * first["samples"] / max(epoch_s, 1e-9) / 1e9, 2)
    for key in ("world_size", "mode", "precision", "command", "parameters"):
        if key in first:
            out[key] = first[key]
    return out


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 4) if known else None


# ---------------------------------------------------------------------------
# FLOP count (classify's LSTM on images; None for other tasks)


def lstm_flops_per_sample(steps: int, input_size: int, hidden: int, layers: int, bidirectional: bool,
                          classes: int) -> float:
    """Forward + backward FLOPs of one sample: per layer and direction 4 gates x H x (I + H)
    multiply-adds per step (2 FLOPs each), the head 2 x features x classes, backward = 2 x forward."""
    dirs = 2 if bidirectional else 1
    forward = 0.0
    for layer in range(layers):
        inp = input_size if layer == 0 else hidden * dirs
        forward += dirs * steps * 2 * 4 * hidden * (inp + hidden)
    forward += 2 * hidden * dirs * classes
    return 3 * forward


def job_flops_per_sample(job: Any) -> float | None:
    """FLOPs per training sample of a classify job on 28 x 28 images; None for other tasks."""
    if job.task != "classify":
        return None
    steps, inp = (784, 1) if job.data.sequence == "pixels" else (28, 28)
    m = job.model
    return lstm_flops_per_sample(steps, inp, m.hidden_size, m.num_layers, m.bidirectional, 10)
