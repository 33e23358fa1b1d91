"""The training loop: the tutorial's loop, with distribution as thin wrapping.

    for epoch in range(epochs):
        for images, labels in batches:
            loss = criterion(model(images), labels)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
    evaluate(model, test_data)

Everything else here is what a cluster job needs around that: an Accelerator
(CPU, one GPU, DDP, multi-node: the same code), this rank's shard of each epoch,
checkpoints to resume mid-epoch, a stop request (SIGTERM, SLURM's warning
signal) honoured at a step boundary, a NaN guard, and metrics from every rank.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from . import checkpoint
from .config import JobBase, OptimConfig, save_job
from .data.batching import batches_per_epoch, epoch_indices, loader_batches, shard_slices, tensor_batches
from .distributed import broadcast_buffers, make_accelerator, set_threads, worker_info
from .progress import Progress
from .tasks import get_task
from .tasks.base import Splits, Task
from .tracking import Tracker


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def train(job: JobBase, stop: threading.Event | None = None) -> dict[str, Any]:
    """Train `job` to the end (or until `stop` is set) and return its result.

    Re-running with the same run directory resumes from the newest checkpoint.
    When `stop` is set (by a signal), every rank saves at the next logging step
    and the result has `"interrupted": True`.
    """
    stop = stop or threading.Event()
    accelerator = make_accelerator(job.train.mixed_precision, job.train.cpu)
    threads = set_threads(job.train.threads)
    rank, world = accelerator.process_index, accelerator.num_processes
    run_dir = job.run_dir
    ckpt_dir = run_dir / "checkpoints"

    # Data and model: identical initial weights on every rank (same seed).
    set_seed(job.train.seed)
    task: Task = get_task(job.task)(job)
    splits: Splits = task.load_data()  # before the run dir exists: bad data leaves no debris
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_job(job, run_dir / "config.yaml")
    accelerator.wait_for_everyone()
    model = task.build_model(splits.info)
    torch_dataset = task.torch_dataset(train=True) if getattr(job.data, "loader", "tensor") == "torchvision" else None
    if torch_dataset is None:
        splits = splits.to(accelerator.device)
    optimizer = make_optimizer(job.optim, model, accelerator.device)
    n_train = len(splits.train[0])
    batch_size = job.data.batch_size
    steps_per_epoch = batches_per_epoch(n_train, batch_size, world)
    total_steps = job.train.epochs * steps_per_epoch
    if job.train.max_steps:
        total_steps = min(total_steps, job.train.max_steps)
    scheduler = make_scheduler(job.optim, optimizer, total_steps, steps_per_epoch)

    # Resume: newest checkpoint in this run directory, wherever it was written from.
    step, resumed_from, elapsed_before = 0, None, 0.0
    found = checkpoint.load_latest(ckpt_dir)
    if found:
        path, state = found
        checkpoint.load_model_state(model, state["model"], path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = resumed_from = state["step"]
        elapsed_before = state.get("train_seconds", 0.0)
        rngs = state["rng"]
        checkpoint.set_rng_state(rngs[rank] if len(rngs) == world else rngs[0])
        accelerator.print(f"resuming from {path} (step {step} of {total_steps})")
    else:
        torch.manual_seed(job.train.seed + rank)  # each rank its own dropout stream
    net = model  # the plain module: checkpoints, evaluation and digests use it, whatever wraps it below
    if job.train.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)

    worker = worker_info(accelerator)
    tracker = Tracker(job, run_dir, job.run_id, worker)
    accelerator.print(
        f"{job.name}: {world} process(es) on {worker.device} ({accelerator.distributed_type}), "
        f"{threads} thread(s) each, {steps_per_epoch} steps/epoch, run dir {run_dir}"
    )

    def save_checkpoint() -> None:
        rngs = gather_objects(accelerator, checkpoint.rng_state())
        if accelerator.is_main_process:
            checkpoint.save(
                ckpt_dir,
                step,
                {
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rngs,
                    "step": step,
                    "world_size": world,
                    "train_seconds": elapsed_before + train_seconds,
                    "task_info": splits.info,
                    "config": job.to_dict(),
                },
                job.train.keep_checkpoints,
            )
        accelerator.wait_for_everyone()

    progress = Progress(total_steps, enabled=accelerator.is_main_process, initial=step)
    pending: list[torch.Tensor] = []  # losses since the last sync, checked for NaN there
    start_time, start_cpu = time.perf_counter(), time.process_time()
    last_sync_time, last_sync_step = start_time, step
    train_seconds, interrupted, evaluated_at = 0.0, False, None
    eval_seconds = eval_cpu_seconds = 0.0  # parts of train_seconds (wall) and train_cpu_seconds in evaluate()
    last_metrics: dict[str, float] = {}

    try:
        model.train()
        while step < total_steps and not interrupted:
            epoch, skip = divmod(step, steps_per_epoch)
            indices = epoch_indices(n_train, epoch, job.train.seed, rank, world)
            if torch_dataset is None:
                batches = tensor_batches(splits.train, indices, batch_size, start=skip)
            else:
                batches = loader_batches(torch_dataset, indices, batch_size, skip, job.data.num_workers)
            for batch in batches:
                batch = tuple(t.to(accelerator.device, non_blocking=True) for t in batch)
                loss = task.loss(model, batch)
                accelerator.backward(loss)
                if job.optim.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), job.optim.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                pending.append(loss.detach())

                # Sync point: one all-reduce carries the loss, the NaN check and stop requests.
                # Only at steps every rank agrees on: a signal reaches ranks at different
                # steps, so it is polled here (every train.log_every steps), never acted on alone.
                at_checkpoint = step % job.train.checkpoint_every == 0
                if step % job.train.log_every == 0 or at_checkpoint or step == total_steps:
                    losses = torch.stack(pending).float()
                    local = torch.stack([
                        losses[-1],
                        (~torch.isfinite(losses)).sum().float(),
                        torch.tensor(float(stop.is_set()), device=losses.device),
                    ])
                    total = accelerator.reduce(local.clone(), "sum")
                    if float(total[1]) > 0:
                        bad = (~torch.isfinite(losses)).nonzero()
                        where = f"step {step - len(losses) + 1 + int(bad[0])}" if len(bad) else "another rank"
                        raise NonFiniteLoss(
                            f"loss is {float(losses[bad[0]]) if len(bad) else 'NaN/inf'} at {where} "
                            f"(between steps {step - len(losses) + 1} and {step}); stopped. "
                            f"The last good checkpoint in {ckpt_dir} is kept: lower optim.lr or set optim.grad_clip."
                        )
                    now = time.perf_counter()
                    train_seconds = now - start_time
                    rate = (step - last_sync_step) * batch_size / max(now - last_sync_time, 1e-9)
                    last_sync_time, last_sync_step = now, step
                    row = {
                        "loss": float(losses[-1]),
                        "global_loss": float(total[0]) / world,
                        "lr": scheduler.get_last_lr()[0],
                        "samples_per_s": rate,
                        "epoch": step / steps_per_epoch,
                    }
                    tracker.log(step, row)
                    progress.update(step, row)
                    pending.clear()
                    interrupted = bool(total[2] > 0)
                    if at_checkpoint or interrupted:
                        save_checkpoint()
                if interrupted or step >= total_steps:
                    break

            epoch_done = step % steps_per_epoch == 0 or step == total_steps
            if not interrupted and epoch_done and (step // steps_per_epoch) % job.train.eval_every_epochs == 0:
                eval_start, eval_cpu_start = time.perf_counter(), time.process_time()
                last_metrics = evaluate(task, accelerator, net, splits.test, job, tracker, step)
                eval_seconds += time.perf_counter() - eval_start
                eval_cpu_seconds += time.process_time() - eval_cpu_start
                evaluated_at = step
                model.train()

        train_seconds = time.perf_counter() - start_time
        train_cpu_seconds = time.process_time() - start_cpu
        if not interrupted and not checkpoint_files_at(ckpt_dir, step):
            save_checkpoint()
        if not interrupted and evaluated_at != step:
            last_metrics = evaluate(task, accelerator, net, splits.test, job, tracker, step)
    except BaseException as error:
        tracker.finish({"error": f"{type(error).__name__}: {error}", "steps": step}, exit_code=1)
        raise
    finally:
        progress.close()

    samples = (step - (resumed_from or 0)) * batch_size * world
    # One digest of the weights per rank: equal digests prove the ranks trained as one model.
    broadcast_buffers(net, world)
    digests = gather_objects(accelerator, weights_digest(net))
    result: dict[str, Any] = {
        **last_metrics,
        "epochs": step / steps_per_epoch,
        "steps": step,
        "world_size": world,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "train_cpu_seconds": round(train_cpu_seconds, 3),  # this process's CPU time: robust on a busy machine
        "eval_cpu_seconds": round(eval_cpu_seconds, 3),
        "samples_per_second": round(samples / max(train_seconds, 1e-9), 1),
        "resumed_from_step": resumed_from,
        "interrupted": interrupted,
        "run_dir": str(run_dir),
        "weights_sha1_per_rank": digests,
    }
    if accelerator.is_main_process and not interrupted:
        extra = task.finish(net, splits, run_dir)
        images = extra.pop("images", {})
        result.update(extra)
        if images:
            tracker.log_images(step, images)
        write_json(run_dir / "result.json", result)
    tracker.finish(result)
    accelerator.wait_for_everyone()
    # Leave the process group cleanly: without it ranks sometimes abort at interpreter
    # exit ("terminate called without an active exception") after finishing their work.
    accelerator.end_training()
    return result


def evaluate(
    task: Task, accelerator: Accelerator, net: torch.nn.Module, test: tuple[torch.Tensor, ...],
    job: JobBase, tracker: Tracker, step: int,
) -> dict[str, float]:
    """Test metrics over every test sample exactly once: each rank its block, sums all-reduced.

    `net` is the plain module, not the DDP wrapper: ranks may run different numbers
    of eval batches, and a DDP forward could wait on collectives the others never make.
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    broadcast_buffers(net, world)
    net.eval()
    sums: dict[str, torch.Tensor] = {}
    eval_batch = getattr(job.data, "eval_batch_size", job.data.batch_size)
    with torch.no_grad(), accelerator.autocast():
        for part in shard_slices(len(test[0]), rank, world, eval_batch):
            batch = tuple(t[part].to(accelerator.device) for t in test)
            for key, value in task.eval_sums(net, batch).items():
                sums[key] = sums.get(key, 0) + value.double()
    keys = sorted(sums)  # same order on every rank
    local = torch.stack([sums[k] for k in keys]) if keys else torch.zeros(0)
    total = accelerator.reduce(local.clone(), "sum")
    shard = task.metrics(dict(zip(keys, local.tolist())), prefix="test/shard_")
    overall = task.metrics(dict(zip(keys, total.tolist())), prefix="test_")
    tracker.log(step, {**{k.replace("test_", "test/", 1): v for k, v in overall.items()}, **shard})
    accelerator.print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in overall.items()))
    return overall


def make_optimizer(cfg: OptimConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer, fused where the device has a fused kernel (one launch per step, not per tensor)."""
    params = model.parameters()
    fast = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fast)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fast)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fast)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)


def make_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning-rate schedule per optimizer step, with optional linear warm-up."""
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if cfg.scheduler == "step":
            return cfg.gamma ** (step // (cfg.step_size_epochs * steps_per_epoch))
        return 1.0

    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=max(total_steps, 2))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def gather_objects(accelerator: Accelerator, obj: Any) -> list[Any]:
    """One object from every rank, in rank order (RNG states for the checkpoint)."""
    if accelerator.num_processes == 1:
        return [obj]
    out: list[Any] = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(out, obj)
    return out


def weights_digest(model: torch.nn.Module) -> str:
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def checkpoint_files_at(folder: Path, step: int) -> bool:
    return any(s == step for s, _ in checkpoint.checkpoint_files(folder))


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
