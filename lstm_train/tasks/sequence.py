"""Classify numeric sequences, or regress a value from them: sensor windows, ECG beats, any
CSV, Parquet or array of sequences with a label (`data/sequences.py` reads the formats).

Sources: the user's files (`data.train`, `data.val`, `data.test`, or fractions of train
cut with `data.split_seed`), or a dataset of the UCR/UEA archive by name (`data.dataset`:
its _TRAIN.ts and _TEST.ts, from `data.archive` or the copy sktime's package ships).

Sequences are of any length and any number of features.  With `data.normalize` each
feature is scaled by the training split's mean and standard deviation over all its steps
(a value target too, by its own): the statistics go into `Splits.info`, so evaluation,
`evaluate` and `predict` scale new data the same way, and `metrics` reports RMSE and MAE
in the target's own units from them (the model never holds a normalisation).

Columns: a `Ragged` of float32 steps [steps, features] and the target (class index, or
the normalised value).  Metrics: accuracy (classes) or R^2, RMSE, MAE (values), all from
additive per-batch sums.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import sequences as seqfiles
from ..data.ragged import Padded, Ragged
from ..data.sequences import Columns, SequenceDataError, Sequences
from ..models.sequence_model import SequenceModel
from .base import PredictInputError, Split, Splits, Task, note
from .registry import BUILTIN_TASKS
from .confusion import per_class

Batch = tuple[Padded, torch.Tensor]


def class_order(labels: list[Any]) -> list[str]:
    """The classes of the training labels, numerically ordered when every one is a number."""
    distinct = {str(v) for v in labels}
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def cut(parts: dict[str, Sequences], fractions: dict[str, float], seed: int) -> None:
    """Move a seeded random `fractions[split]` of train into each missing split (in place)."""
    train = parts["train"]
    order = np.random.default_rng(seed).permutation(len(train))
    start = 0
    for split, fraction in fractions.items():
        if parts.get(split) is not None or not fraction:
            continue
        n = max(1, round(len(train) * fraction))
        picked = sorted(order[start : start + n])
        start += n
        parts[split] = Sequences([train.x[i] for i in picked], [train.y[i] for i in picked], train.features,
                                 f"{train.path} ({fraction:g} of it, seed {seed})")
    kept = sorted(order[start:])
    if start:
        if not kept:
            raise SequenceDataError(f"{train.path}: nothing left to train on after the val and test fractions")
        parts["train"] = Sequences([train.x[i] for i in kept], [train.y[i] for i in kept], train.features, train.path)



def check_values(part: Sequences, targets: bool = False) -> None:
    """Every step a number: a missing value (NaN) or an infinite one inside a sequence is an error
    naming it (it would train on NaN losses, or scale every other value to 0); `targets`: the
    values to predict too."""
    gaps = [i for i, x in enumerate(part.x) if np.isnan(x).any()]
    if gaps:
        raise SequenceDataError(f"{part.path}: sequence number {gaps[0] + 1} has missing values (NaN) inside it; "
                                "fill them before training")
    infinite = [i for i, x in enumerate(part.x) if np.isinf(x).any()]
    if infinite:
        raise SequenceDataError(f"{part.path}: sequence number {infinite[0] + 1} has an infinite value; give finite "
                                "numbers")
    if targets:
        y = np.asarray(part.y, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise SequenceDataError(f"{part.path}: the value to predict of sequence number {bad[0] + 1} is {y[bad[0]]}; "
                                    "give finite numbers")

class SequenceTask(Task):
    registration = BUILTIN_TASKS["sequence"]

    # ------------------------------------------------------------------ data

    def _columns(self) -> Columns:
        d = self.job.data
        return Columns(d.label_column, d.id_column, d.time_column, d.feature_columns)

    def source_files(self) -> list[Path]:
        d = self.job.data
        if d.dataset:
            return list(seqfiles.archive_files(d.dataset, d.archive))
        specs = [s for s in (d.train, d.val, d.test) if s]
        return [Path(p).expanduser() for s in specs for p in ([s] if isinstance(s, str) else s)]

    def _read(self) -> dict[str, Sequences]:
        d = self.job.data
        if d.dataset:
            train, test = seqfiles.archive_files(d.dataset, d.archive)
            parts = {"train": seqfiles.read(str(train), self._columns(), "ts"),
                     "test": seqfiles.read(str(test), self._columns(), "ts")}
        else:
            parts = {split: seqfiles.read(spec, self._columns(), d.format)
                     for split, spec in (("train", d.train), ("val", d.val), ("test", d.test)) if spec}
        cut(parts, {"test": d.test_fraction, "val": d.val_fraction}, d.split_seed)
        features = len(parts["train"].features)
        for split, part in parts.items():
            if part.x[0].shape[1] != features:
                raise SequenceDataError(f"{part.path}: {part.x[0].shape[1]} features per step, the training data "
                                        f"has {features}")
        return parts

    def load_data(self) -> Splits:
        parts = self._read()
        info = self._info(parts["train"])
        columns = {split: self.encode(part, info) for split, part in parts.items()}
        lengths = [len(x) for x in parts["train"].x]
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in parts.items())
        what = f"{len(info['classes'])} classes" if info["target"] == "class" else "a value"
        note(f"sequences: {sizes}; {info['input_size']} features, {min(lengths)}-{max(lengths)} steps; {what}")
        return Splits(train=columns["train"], val=columns.get("val"), test=columns["test"], info=info)

    def _info(self, train: Sequences) -> dict[str, Any]:
        """What the model, evaluation and predict need: the features' and target's statistics."""
        d = self.job.data
        check_values(train)
        steps = np.concatenate(train.x)
        mean, std = (steps.mean(0), steps.std(0)) if d.normalize else (np.zeros(steps.shape[1]), np.ones(steps.shape[1]))
        info: dict[str, Any] = {"features": train.features, "input_size": int(steps.shape[1]),
                                "feature_mean": mean.tolist(), "feature_std": np.where(std > 0, std, 1.0).tolist(),
                                "target": d.target}
        if d.target == "class":
            info.update(classes=class_order(train.y), primary_metric="accuracy")
            if len(info["classes"]) < 2:
                raise SequenceDataError(f"{train.path}: every training label is {info['classes'][0]!r}: one class, "
                                        "nothing to learn (data.target: class needs two classes or more; for numbers "
                                        "to predict set data.target: value)")
        else:
            y = np.asarray(train.y, dtype=np.float64)
            spread = float(y.std()) if d.normalize and y.std() > 0 else 1.0
            info.update(target_mean=float(y.mean()) if d.normalize else 0.0, target_std=spread, primary_metric="r2")
        return info

    def encode(self, part: Sequences, info: dict[str, Any], labelled: bool = True) -> Split:
        """Sequences as the model reads them: steps scaled by the training statistics in `info`,
        class labels as indices (one the run never saw is an error), values normalised."""
        check_values(part, labelled and info["target"] == "value")
        values = (np.concatenate(part.x) - np.asarray(info["feature_mean"])) / np.asarray(info["feature_std"])
        x = Ragged.from_lengths(torch.from_numpy(values.astype(np.float32)), torch.tensor([len(s) for s in part.x]))
        if not labelled:
            return (x,)
        if info["target"] == "value":
            y = (np.asarray(part.y, dtype=np.float64) - info["target_mean"]) / info["target_std"]
            return x, torch.from_numpy(y.astype(np.float32))
        index = {c: i for i, c in enumerate(info["classes"])}
        unknown = next((str(v) for v in part.y if str(v) not in index), None)
        if unknown is not None:
            raise SequenceDataError(f"{part.path}: label {unknown!r} is not a class of the training data "
                                    f"({', '.join(info['classes'][:20])})")
        return x, torch.tensor([index[str(v)] for v in part.y], dtype=torch.long)

    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        fmt = "ts" if self.job.data.dataset else self.job.data.format
        parts = [seqfiles.read(str(f), self._columns(), fmt) for f in files]
        merged = Sequences([x for p in parts for x in p.x], [y for p in parts for y in p.y], parts[0].features,
                           ", ".join(p.path for p in parts))
        return self.encode(merged, info)

    # ------------------------------------------------------------------ model, training, evaluation

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        outputs = len(info["classes"]) if info["target"] == "class" else 1
        return SequenceModel(info["input_size"], m.hidden_size, m.num_layers, outputs, m.bidirectional, m.dropout,
                             m.pooling, m.head_dropout)

    def loss(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> torch.Tensor:
        steps, target = batch
        out = model(steps.data, steps.lengths)
        return F.cross_entropy(out, target) if info["target"] == "class" else F.mse_loss(out[:, 0], target)

    def eval_sums(self, model: nn.Module, batch: Batch, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        steps, target = batch
        out = model(steps.data, steps.lengths)
        count = torch.tensor(len(target), device=target.device)
        if info["target"] == "class":
            return {"loss_sum": F.cross_entropy(out, target, reduction="sum"),
                    "correct": (out.argmax(1) == target).sum(), "count": count}
        error = out[:, 0] - target
        return {"sse": error.pow(2).sum(), "sae": error.abs().sum(), "y_sum": target.sum(),
                "y2_sum": target.pow(2).sum(), "count": count}

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        n = max(sums["count"], 1)
        if info["target"] == "class":
            return {f"{prefix}loss": sums["loss_sum"] / n, f"{prefix}accuracy": sums["correct"] / n,
                    f"{prefix}samples": int(sums["count"])}
        spread = sums["y2_sum"] - sums["y_sum"] ** 2 / n  # of the normalised targets: R^2 is scale-free
        scale = info["target_std"]  # back to the target's own units
        return {f"{prefix}loss": sums["sse"] / n, f"{prefix}r2": 1 - sums["sse"] / spread if spread > 0 else 0.0,
                f"{prefix}rmse": math.sqrt(sums["sse"] / n) * scale, f"{prefix}mae": sums["sae"] / n * scale,
                f"{prefix}samples": int(sums["count"])}

    # ------------------------------------------------------------------ after training

    def _outputs(self, model: nn.Module, x: Ragged) -> torch.Tensor:
        """The model's outputs for every sequence of `x`, in order, a batch at a time (CPU float32)."""
        device = next(model.parameters()).device
        was_training, chunks = model.training, []
        model.eval()
        with torch.no_grad(), self.autocast(device):
            for start in range(0, len(x), self.job.data.eval_batch_size):
                padded = x.pad(torch.arange(start, min(start + self.job.data.eval_batch_size, len(x))).to(x.device))
                chunks.append(model(padded.data.to(device), padded.lengths.to(device)).float().cpu())
        model.train(was_training)
        return torch.cat(chunks)

    def finish(self, model: nn.Module, splits: Splits, run_dir: Path) -> dict[str, Any]:
        """Classes: the test confusion matrix and per-class precision, recall and F1 (result.json)."""
        info = splits.info
        if info["target"] != "class" or splits.test is None:
            return {}
        classes, labels = info["classes"], splits.test[1].cpu()
        predicted = self._outputs(model, splits.test[0]).argmax(1)
        matrix = torch.bincount(labels * len(classes) + predicted, minlength=len(classes) ** 2).reshape(len(classes), -1)
        return {"test_per_class": per_class(matrix, classes),
                "test_confusion_matrix": {"classes": classes, "rows_true_columns_predicted": matrix.tolist()}}

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        """One line per sequence: the class and its probability, or the value.  Sequences as
        arguments (steps separated by `;`, features by `,`) or `--file` (any of the formats)."""
        found = [parse_sequence(text, i, info["input_size"]) for i, text in enumerate(inputs, 1)]
        if options.get("file"):
            read = seqfiles.read(options["file"], self._columns(), self.job.data.format, labelled=False)
            found += read.x
        if not found:
            raise PredictInputError('give sequences: lstm-train predict RUN_DIR "0.1,2;0.3,1" ... or --file FILE')
        (x,) = self.encode(Sequences(found, None, info["features"], "input"), info, labelled=False)
        out = self._outputs(model, x)
        if info["target"] == "value":
            return [f"{float(v) * info['target_std'] + info['target_mean']:.6g}" for v in out[:, 0]]
        p, k = out.softmax(1).max(1)
        return [f"{info['classes'][int(c)]}\t{float(q):.4f}" for c, q in zip(k, p)]


def parse_sequence(text: str, number: int, features: int) -> np.ndarray:
    """A sequence typed as an argument: steps separated by `;`, a step's features by `,`."""
    if not text.strip():
        raise PredictInputError(f"argument number {number} is empty: give a sequence (steps by ';', features by ',')")
    try:
        steps = [[float(v) for v in step.split(",")] for step in text.strip().strip(";").split(";")]
    except ValueError:
        raise PredictInputError(f"argument number {number}: {text[:60]!r} is not numbers (steps by ';', "
                                "features by ',')") from None
    if any(len(s) != features for s in steps):
        raise PredictInputError(f"argument number {number}: every step needs {features} features (separated by ',')")
    return np.array(steps, dtype=np.float64)


TASK = SequenceTask
