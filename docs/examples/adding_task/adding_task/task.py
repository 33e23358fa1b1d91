"""The adding problem: a sequence of (value, marker) steps, values uniform in [0, 1], exactly two
markers set (one in each half); the answer is the sum of the two marked values.  Predicting
the mean answer (1.0) scores a mean squared error of 1/6: a model under it has learned to
remember what it was told to.  The model learns the answer normalised by the training
targets' mean and deviation (in `info`); `eval_sums` and `predict` answer in the problem's
own units from the same `info`."""

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lstm_train.task_api import Ragged, SequenceModel, Splits, Task, predict_texts

from . import REGISTRATION


def draw(rng: np.random.Generator, n: int, low: int, high: int) -> tuple[Ragged, torch.Tensor]:
    """n sequences of lengths in [low, high]: steps [value, marker] and the answers."""
    lengths = rng.integers(low, high + 1, n)
    steps, answers = [], []
    for length in lengths:
        x = np.zeros((length, 2), dtype=np.float32)
        x[:, 0] = rng.random(length)
        marked = [rng.integers(0, length // 2), rng.integers(length // 2, length)]
        x[marked, 1] = 1
        steps.append(torch.from_numpy(x))
        answers.append(x[marked, 0].sum())
    return Ragged.from_sequences(steps, dtype=torch.float32), torch.tensor(answers)


def parse(text: str) -> torch.Tensor:
    """'0.3 0.9* 0.1 0.4*' -> steps [[0.3, 0], [0.9, 1], [0.1, 0], [0.4, 1]]."""
    words = text.split()
    if sum(w.endswith("*") for w in words) != 2:
        raise ValueError(f"{text!r}: mark exactly two numbers with *")
    return torch.tensor([[float(w.rstrip("*")), float(w.endswith("*"))] for w in words])


class AddingTask(Task):
    registration = REGISTRATION  # its name ("adding") and job sections
    primary_metric = "mse"
    higher_is_better = False

    def load_data(self) -> Splits:
        d = self.job.data
        rng, test_rng = np.random.default_rng(d.seed), np.random.default_rng([d.seed, 1])
        train = draw(rng, d.train_size, d.min_length, d.max_length)
        val = draw(rng, d.val_size, d.min_length, d.max_length) if d.val_size else None
        test = draw(test_rng, d.test_size, d.min_length, d.max_length)
        info = {"mean": float(train[1].mean()), "std": float(train[1].std())}
        return Splits(train=train, val=val, test=test, info=info)

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        return SequenceModel(2, m.hidden_size, m.num_layers, 1, m.bidirectional, m.dropout)

    def loss(self, model: nn.Module, batch: Any, info: dict[str, Any]) -> torch.Tensor:
        steps, answers = batch
        return F.mse_loss(model(steps.data, steps.lengths)[:, 0], (answers - info["mean"]) / info["std"])

    def eval_sums(self, model: nn.Module, batch: Any, info: dict[str, Any]) -> dict[str, torch.Tensor]:
        steps, answers = batch
        guess = model(steps.data, steps.lengths)[:, 0] * info["std"] + info["mean"]
        return {"squared_error": (guess - answers).pow(2).sum(), "count": torch.tensor(len(answers))}

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        mse = sums["squared_error"] / max(sums["count"], 1)
        return {f"{prefix}mse": mse, f"{prefix}loss": mse, f"{prefix}samples": int(sums["count"])}

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        lines = []
        for text in predict_texts(inputs, options):
            steps = parse(text)
            with torch.no_grad():
                guess = model(steps[None], torch.tensor([len(steps)]))[0, 0] * info["std"] + info["mean"]
            lines.append(f"{float(guess):.3f}\t{text}")
        return lines
