"""The contract between a task and the one training loop in `lstm_train.train`.

A task says what is learned: its data (as tensor columns), its model, its loss,
its metrics and which of them picks the best model.  The loop does the rest
the same way for every task: batches, distribution, checkpoints, evaluation,
model selection, tracking.  See "Adding a task" in README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..data.ragged import Column, Padded, Ragged, gather, sample_lengths
from ..distributed import resolve_precision
from ..schema import DataBase, ModelBase

Split = tuple[Column, ...]
Batch = tuple[torch.Tensor | Padded, ...]


@dataclass
class Splits:
    """A task's data as tensors.  Each split is a tuple of columns of the same number of
    samples: a dense tensor [N, ...] (images, windows, labels) or a `Ragged` set of
    variable-length sequences (token ids, tags).  A batch of a split (`gather`) is the
    same tuple with dense columns index-selected and ragged ones padded (`Padded`).

    Tensors stay in their compact stored form (uint8 pixels, int token ids): the loop
    moves them to the training device once and the task converts each batch on the fly.
    `info` carries everything else evaluation, `finish` and `predict` need (class
    names, a vocabulary, scaling statistics...): it is saved in every checkpoint, so
    `predict` and a resumed run rebuild the model from it without loading any data.
    """

    train: Split
    test: Split
    val: Split | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> Splits:
        move = lambda split: None if split is None else tuple(c.to(device) for c in split)  # noqa: E731
        return Splits(move(self.train), move(self.test), move(self.val), self.info)


@dataclass
class ExportSignature:
    """What `lstm-train export` feeds the model: named example inputs (from one batch of the
    task's own data), the axes of each that may vary (batch, sequence length), the output names
    and, where the deployed answer is not the module's own output, the function that computes it.
    `metadata` goes into the export's JSON sidecar."""

    inputs: dict[str, torch.Tensor]
    dynamic_axes: dict[str, dict[int, str]]
    outputs: list[str]
    forward: Any = None  # (model, *inputs) -> output; None: model(*inputs)
    metadata: dict[str, Any] = field(default_factory=dict)  # what reading the outputs needs (class names...)


def split_size(split: Split) -> int:
    return len(split[0])


class Task:
    """One kind of learning problem.  Subclasses set the class attributes and methods below.

    The loop calls, in order: `load_data` (every rank, CPU tensors; or once, through the
    prepared-data store, where `source_files` names the inputs), `write_run_files`
    (main process, once the run directory exists), `build_model` (from `splits.info`),
    then per batch `loss`; at each evaluation `eval_sums` per batch of the rank's shard
    (summed over batches and ranks) and `metrics` on the totals; at the end, with the
    best weights, the test evaluation and `finish` (main process).
    """

    name: ClassVar[str]
    Data: ClassVar[type[DataBase]]
    Model: ClassVar[type[ModelBase]]
    # The metric that picks the best checkpoint, ranks sweep points and heads the summary
    # (a key of `metrics` without its prefix), and which way is better.
    primary_metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    # What throughput counts: samples (images, windows) or tokens (text).
    throughput_unit: ClassVar[Literal["samples", "tokens"]] = "samples"
    # `train.mixed_precision: auto` trains in bf16 where the hardware runs it natively,
    # unless the task's metrics were measured to suffer from it ("fp32").
    precision: ClassVar[Literal["auto", "fp32"]] = "auto"

    def __init__(self, job: Any, run_dir: Path | None = None) -> None:
        self.job = job
        self.run_dir = run_dir

    # -- data and model ---------------------------------------------------------------

    def load_data(self) -> Splits:
        raise NotImplementedError

    def source_files(self) -> list[Path] | None:
        """The files `load_data` reads.  A list: the loop prepares the data once into the
        prepared-data store (`data/prepared.py`, keyed by these files' contents and the data
        section) and every rank memory-maps it; `load_data` then runs only when preparing, so
        it must not leave state on `self`.  None (the default): `load_data` runs on every rank."""
        return None

    def write_run_files(self, run_dir: Path, info: dict[str, Any]) -> None:
        """Main process, once the run directory exists: files a user or `predict` reads
        besides the checkpoint (a vocabulary, say).  Default: none."""

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        """The model, built from `splits.info` alone: `predict` rebuilds it from the
        checkpoint's copy of that dict without loading any data."""
        raise NotImplementedError

    def torch_dataset(self, train: bool) -> torch.utils.data.Dataset | None:
        """A classic Dataset for the DataLoader path, where the task offers one (classify's
        `data.loader: torchvision`); None: batches are cut from the split tensors."""
        return None

    def lengths(self, split: Split) -> torch.Tensor | None:
        """Per-sample lengths for bucketing and token budgets (CPU int64 [N]); None for
        fixed-size samples.  Default: the longest ragged column of each sample."""
        return sample_lengths(split)

    def tokens(self, split: Split) -> torch.Tensor | None:
        """Per-sample token counts for throughput (CPU int64 [N]) when `throughput_unit` is
        tokens.  Default: the lengths of the first ragged column."""
        ragged = [c for c in split if isinstance(c, Ragged)]
        return ragged[0].lengths_cpu if ragged else None

    def batch(self, split: Split, indices: torch.Tensor) -> Batch:
        """The batch of `indices` (on the split's device).  Default: `gather`."""
        return gather(split, indices)

    # -- training and evaluation ---------------------------------------------------------

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Mean training loss of one batch (grad enabled)."""
        raise NotImplementedError

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Additive statistics of one evaluation batch (no grad): e.g. loss_sum, correct, count."""
        raise NotImplementedError

    def metrics(self, sums: dict[str, float], prefix: str = "test_") -> dict[str, float]:
        """Turn summed statistics into metrics named `<prefix>loss`, `<prefix>accuracy`..."""
        raise NotImplementedError

    # -- after training ------------------------------------------------------------------

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        """Main process, after the final test evaluation, with the best weights: plots,
        baselines, prediction files.  Returns extra result.json keys.  Two keys are taken
        out for W&B instead: `images` ({name: PNG path}) and `tables` ({name: {"columns":
        [...], "rows": [[...], ...]}}, logged as W&B tables of examples)."""
        return {}

    def autocast(self, device: torch.device) -> torch.autocast:
        """The precision the loop trained and evaluated in (`train.mixed_precision` as it resolves
        it), for decoding in `finish` and `predict`: their outputs are then the ones the logged
        metrics measured."""
        precision = resolve_precision(self.job.train.mixed_precision, self.precision, device.type == "cpu")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        enabled = dtype is not None and (device.type == "cuda" or dtype == torch.bfloat16)
        return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=enabled)

    def export_signature(self, batch: Batch, info: dict[str, Any]) -> ExportSignature:
        """The model's inputs for `lstm-train export`, made from a batch of this task's data.
        Only a task whose answer is one forward pass over tensors has one; decoders that loop
        over their own outputs (beam search, greedy decoding until an end token) do not."""
        raise ValueError(f"task {self.name} cannot be exported: its predictions are not one forward pass "
                         f"with a fixed input signature (exportable: classify, text_classify, tag, forecast)")

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """Lines to print for `lstm-train predict RUN_DIR INPUT...`."""
        raise NotImplementedError(f"task {self.name} has no predict")
