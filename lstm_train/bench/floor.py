"""The floor: the job's own model, forward, backward and optimizer step, and nothing else.

    for batch in preloaded_batches:          # already cut, already on the device
        loss = task.loss(model, batch)       # under the job's autocast
        loss.backward()                      # (per micro-batch, / n, with gradient accumulation)
        clip_grad_norm_(...)                 # where the job clips
        optimizer.step()                     # the loop's optimizer (fused Adam/AdamW/SGD)
        optimizer.zero_grad(set_to_none=True)

Same task, model, batches (lstm_train's batch plan: epoch order, buckets, token budgets,
micro-batches), precision, thread count and optimizer as `lstm-train run` uses: what any loop around this model must pay at
least.  lstm_train's epoch time divided by this one is the framework's overhead.

On a GPU the step is also captured as CUDA graphs (one per batch shape: forward,
backward, clipping and a capturable optimizer step, replayed with the batch copied into
the graph's inputs), and the floor is whichever of eager and graphed measures faster on
the first steps (those probe steps, and the graphs' warm-up, train the measured model
too).  Warm-up steps on a copy of the model (oneDNN primitives, cuDNN plans) run before
the clock starts, so the floor is the kernels' steady speed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch

from ..data.ragged import Padded
from ..tasks.base import Batch, Split, Task
from ..optim import make_optimizer
from .measure import autocast, batch_plan, evaluate, global_batches, primary, sync, trained_units

WARMUP_STEPS = 3
MAX_GRAPHS = 8  # distinct batch shapes worth capturing; more (text of many lengths) stays eager
Step = Callable[[list[Batch]], None]  # one optimizer step over a process's micro-batches


def flat(batch: Batch) -> list[torch.Tensor]:
    """A batch's tensors in order (a Padded column gives its data and lengths)."""
    out: list[torch.Tensor] = []
    for column in batch:
        out += list(column) if isinstance(column, Padded) else [column]
    return out


def shape_key(step: list[Batch]) -> tuple:
    return tuple((tuple(t.shape), t.dtype) for batch in step for t in flat(batch))


def clone(step: list[Batch]) -> list[Batch]:
    return [tuple(Padded(c.data.clone(), c.lengths.clone()) if isinstance(c, Padded) else c.clone() for c in batch)
            for batch in step]


def eager_step(task: Task, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
               precision: str, grad_clip: float | None, info: dict[str, Any], set_to_none: bool = True) -> Step:
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def step(micro_batches: list[Batch]) -> None:
        if not set_to_none:  # graphed: the step zeroes the grads it accumulates into
            optimizer.zero_grad(set_to_none=False)
        n = len(micro_batches)
        for batch in micro_batches:
            with autocast(device, precision):
                loss = task.loss(model, batch, info)
            loss = loss / n if n > 1 else loss
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            scaler.unscale_(optimizer)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if set_to_none:
            optimizer.zero_grad(set_to_none=True)

    return step


def graphed_step(task: Task, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 precision: str, grad_clip: float | None, info: dict[str, Any], batches: list[list[Batch]]) -> Step:
    """The whole step as CUDA graphs, one per batch shape (raises where capture is impossible)."""
    if precision == "fp16":
        raise RuntimeError("fp16 needs GradScaler's host-side checks; not graphed")
    keys = {shape_key(b): b for b in batches}
    if len(keys) > MAX_GRAPHS:
        raise RuntimeError(f"{len(keys)} batch shapes; at most {MAX_GRAPHS} are captured")
    body = eager_step(task, model, optimizer, device, precision, grad_clip, info, set_to_none=False)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # grads and optimizer state exist before capture, as capture requires
        for batch in batches[:WARMUP_STEPS]:
            body(batch)
    torch.cuda.current_stream(device).wait_stream(side)
    graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor]]] = {}
    for key, example in keys.items():
        static = clone(example)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body(static)
        graphs[key] = (graph, [t for batch in static for t in flat(batch)])

    def step(micro_batches: list[Batch]) -> None:
        graph, inputs = graphs[shape_key(micro_batches)]
        for dst, src in zip(inputs, (t for batch in micro_batches for t in flat(batch))):
            dst.copy_(src, non_blocking=True)
        graph.replay()

    return step


def capturable(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The same optimizer with `capturable=True` (its step counters on the device)."""
    if "capturable" not in optimizer.defaults:
        raise RuntimeError(f"{type(optimizer).__name__} has no capturable mode")
    return type(optimizer)(model.parameters(), **{**optimizer.defaults, "capturable": True})


def timed(step: Step, batches: list[list[Batch]], device: torch.device, seconds: float | None) -> tuple[int, float, float]:
    """Run `step` over the batches (or until `seconds` of wall time): steps, wall s, CPU s."""
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    done = 0
    for batch in batches:
        step(batch)
        done += 1
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
    sync(device)
    return done, time.perf_counter() - start, time.process_time() - start_cpu


def floor_epoch(job: Any, task: Task, train: Split, test: Split, info: dict[str, Any], device: torch.device,
                precision: str, steps: int, seconds: float | None = None) -> dict[str, Any]:
    """The floor over the job's first `steps` steps (or `seconds`), on splits already on `device`."""
    torch.manual_seed(job.train.seed)
    model = task.build_model(info)
    task.init_weights(model, info)
    model = model.to(device)
    optimizer = make_optimizer(job.optim, model, device)
    plan = batch_plan(job, task, train)
    batches = [[task.batch(train, idx.to(device)) for idx in plan.micro_batches(g, 0)]
               for g in global_batches(plan, steps)]
    clip = job.optim.grad_clip
    model.train()
    spare = copy.deepcopy(model)  # warms the kernels up; the measured model starts from the initial weights
    warm = eager_step(task, spare, make_optimizer(job.optim, spare, device), device, precision, clip, info)
    for batch in batches[:WARMUP_STEPS]:
        warm(batch)
    del spare, warm
    step, mode = eager_step(task, model, optimizer, device, precision, clip, info), "eager"
    if device.type == "cuda":  # keep the graphs where they measure faster
        probe = batches[: max(10, min(50, len(batches) // 10))]
        eager_s = timed(step, probe, device, None)[1]
        try:
            optimizer = capturable(optimizer, model)
            graphed = graphed_step(task, model, optimizer, device, precision, clip, info, batches)
            graph_s = timed(graphed, probe, device, None)[1]
            if graph_s < eager_s:
                step, mode = graphed, "cuda_graph"
        except Exception as error:  # noqa: BLE001 - any failure to capture leaves the eager floor
            mode = f"eager (CUDA graph: {type(error).__name__}: {str(error).splitlines()[0][:120]})"
            torch.cuda.synchronize(device)
    done, epoch_s, cpu_s = timed(step, batches, device, seconds)
    eval_start = time.perf_counter()
    metrics = evaluate(task, model, test, device, precision, info, job.data.eval_batch_size)
    trained, samples = trained_units(task, train, plan, done)
    return {
        "steps": done,
        "samples": samples,
        "units": trained,
        "epoch_s": epoch_s,
        "cpu_s": cpu_s,
        "eval_s": time.perf_counter() - eval_start,
        "metric": primary(task, metrics, info),
        "mode": mode,
        "precision": precision,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
