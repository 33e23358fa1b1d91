"""What one training run is made of: `Run`, fixed once `setup` has built it, and `LoopState`,
what changes from step to step (its lasting part saved in every checkpoint).

Every step of the loop (`startup`, `steps`, `deadline`, `evaluation`, `result`) takes these two
and nothing else, so that the loop in `lstm_train.train` reads as the tutorial's loop does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from .. import checkpoint, runlock, timelimit
from ..averaging import WeightAverage
from ..config import JobBase
from ..data.batching import BatchPlan
from ..distributed import BatchLayout, SparseGradients
from ..optim import Budget
from ..selection import Selection
from ..tasks.base import Splits, Task
from ..tracking import Tracker


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
        return self.run_dir / checkpoint.CHECKPOINTS

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
    eval_cpu_seconds: float = 0.0  # this process's CPU in those evaluations: train_cpu_seconds less it is the steps'
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
