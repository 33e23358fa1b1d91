"""The same job under PyTorch Lightning, as a Lightning user would write it at its fastest.

A LightningModule around the task's own model and loss, a `TensorDataset` of the
preloaded training tensors behind a shuffling DataLoader, and a Trainer with logging,
checkpointing, progress bar and model summary off.  The optimizer is the job's (same
name and hyperparameters) as Lightning's documentation writes it, `torch.optim.Adam(
self.parameters(), lr=...)` with torch's defaults (`optimizer="plain"`), or the loop's
own fused one (`optimizer="fused"`), to show how much of the difference that is.  Measured at
`32-true` and `bf16-mixed`; the epoch is timed by a callback (training batches only, as
lstm_train's epoch time is).  Lightning is an optional extra (`pip install
'lstm_train[bench]'`); without it the bench says "not installed".
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import time
import warnings
from typing import Any

import torch

from ..data.ragged import Ragged
from ..tasks.base import Split, Task, split_size
from ..optim import make_optimizer
from .measure import evaluate, primary, sync

PRECISIONS = {"fp32": ("32-true", "no"), "bf16": ("bf16-mixed", "bf16")}  # name: (Lightning's, lstm_train's)


def unavailable(train: Split, task: str | None = None) -> str | None:
    """Why Lightning cannot run this job (of task `task`) here, or None."""
    if importlib.util.find_spec("lightning") is None:
        return "not installed (pip install 'lstm_train[bench]')"
    if task == "language_model":  # its peer is pytorch/examples' word_language_model loop (the tutorial row)
        return ("not applicable (a language model trains on contiguous windows of one token stream with the "
                "state carried between them, not on the samples of a TensorDataset)")
    if any(isinstance(c, Ragged) for c in train):
        return "not applicable (variable-length columns do not fit a TensorDataset)"
    return None


def plain_optimizer(job: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The job's optimizer with torch's default implementation (no fused kernel asked for)."""
    o = job.optim
    if o.name in ("adam", "adamw"):
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    cls = torch.optim.SGD if o.name == "sgd" else torch.optim.RMSprop
    return cls(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def lightning_epoch(job: Any, task: Task, train: Split, test: Split, info: dict[str, Any], device: torch.device,
                    precision: str, threads: int, max_steps: int | None, optimizer: str = "plain") -> dict[str, Any]:
    """One epoch (or `max_steps`) under `lightning.Trainer`; `precision` is "fp32" or "bf16",
    `optimizer` "plain" (torch's defaults, as users write it) or "fused" (the loop's)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    tokens = task.tokens(train) if task.throughput_unit == "tokens" else None

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = task.build_model(info)
            task.init_weights(self.model, info)
            self.units = 0

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            *columns, index = batch
            self.units += int(tokens[index.cpu()].sum()) if tokens is not None else len(index)
            return task.loss(self.model, tuple(columns), info)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            if optimizer == "fused":
                return make_optimizer(job.optim, self.model, device)
            return plain_optimizer(job, self.model)

    class EpochClock(L.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            torch.set_num_threads(threads)
            sync(device)
            self.start, self.start_cpu = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            sync(device)
            self.epoch_s, self.cpu_s = time.perf_counter() - self.start, time.process_time() - self.start_cpu

    torch.manual_seed(job.train.seed)
    module = Module()
    dataset = TensorDataset(*(c.cpu() for c in train), torch.arange(split_size(train)))
    loader = DataLoader(dataset, batch_size=job.data.batch_size, shuffle=True)
    clock = EpochClock()
    trainer_precision, ours = PRECISIONS[precision]
    trainer = fit(module, loader, clock, device, trainer_precision, max_steps)
    model = module.model.to(device)
    eval_start = time.perf_counter()
    metrics = evaluate(task, model, test, device, ours, info, job.data.eval_batch_size)
    return {
        "steps": int(trainer.global_step),
        "samples": min(split_size(train), int(trainer.global_step) * job.data.batch_size),
        "units": module.units,
        "epoch_s": clock.epoch_s,
        "cpu_s": clock.cpu_s,
        "eval_s": time.perf_counter() - eval_start,
        "metric": primary(task, metrics, info),
        "precision": trainer_precision,
        "optimizer": optimizer,
    }


def fit(module: Any, loader: Any, clock: Any, device: torch.device, precision: str, max_steps: int | None) -> Any:
    """`lightning.Trainer(...).fit` for one epoch (or `max_steps`) as a user would call it, with
    nothing extra switched on (no logger, checkpoints, progress bar or summary), its logs and
    warnings kept out of the benchmark's report."""
    import lightning as L

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        trainer = L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
            max_epochs=1, max_steps=max_steps or -1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[clock],
        )
        trainer.fit(module, loader)
    return trainer
