"""The contract between a task and the one training loop in `lstm_train.train`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ModelBase, Section


@dataclass
class Splits:
    """A task's data as tensors, each split a tuple of same-length tensors (x, y, ...).

    Tensors stay in their compact stored form (uint8 pixels, say): the loop moves
    them to the training device once and the task converts each batch on the fly.
    `info` carries what evaluation or prediction needs besides (scaling stats...).
    """

    train: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    val: tuple[torch.Tensor, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> Splits:
        move = lambda split: None if split is None else tuple(t.to(device) for t in split)  # noqa: E731
        return Splits(move(self.train), move(self.test), move(self.val), self.info)


class Task:
    """One kind of learning problem.  Subclasses set `Data`/`Model` and the methods below.

    The loop calls, in order: `load_data` (every rank, CPU tensors), `build_model`,
    (from `splits.info`), then per batch `loss`; at evaluation `eval_sums` per batch of the rank's test
    shard (the loop sums them over batches and ranks) and `metrics` on the totals;
    at the end `finish` on the main process only.
    """

    name: ClassVar[str]
    Data: ClassVar[type[Section]]
    Model: ClassVar[type[ModelBase]]

    def __init__(self, job: Any) -> None:
        self.job = job

    def load_data(self) -> Splits:
        raise NotImplementedError

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        """The model, built from `splits.info` alone: `predict` rebuilds it from the
        checkpoint's copy of that dict without loading any data."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean training loss of one batch (grad enabled)."""
        raise NotImplementedError

    def eval_sums(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Additive statistics of one test batch (no grad): e.g. loss_sum, correct, count."""
        raise NotImplementedError

    def metrics(self, sums: dict[str, float], prefix: str = "test_") -> dict[str, float]:
        """Turn summed statistics into metrics named `<prefix>loss`, `<prefix>accuracy`..."""
        raise NotImplementedError

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        """Main process, after training: plots, baselines.  Returns extra result.json keys;
        files it writes that should go to W&B as images are listed under key `images`."""
        return {}

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """Lines to print for `lstm-train predict RUN_DIR INPUT...`."""
        raise NotImplementedError(f"task {self.name} has no predict")
