"""Classify images read row by row: the tutorial's MNIST example (and Fashion-MNIST)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import mnist
from ..data.digit_files import digit_pixels, labelled_images
from ..data.holdout import holdout
from ..models import LSTMClassifier
from .base import ExportSignature, Split, Splits, Task, predict_files
from .registry import BUILTIN_TASKS

CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}


def as_rows(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 28, 28] (or ToTensor's float [B, 1, 28, 28]) -> float [B, 28 steps, 28 pixels] in [0, 1]."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255)
    return images.reshape(images.shape[0], -1, images.shape[-1])


def as_sequence(images: torch.Tensor, sequence: str = "rows") -> torch.Tensor:
    """`as_rows`, or for `data.sequence: pixels` one pixel per step: float [B, 784, 1]."""
    rows = as_rows(images)
    return rows.reshape(rows.shape[0], -1, 1) if sequence == "pixels" else rows


class ClassifyTask(Task):
    registration = BUILTIN_TASKS["classify"]

    def source_files(self) -> list[Path] | None:
        """The IDX files (mapped through the prepared-data store); the torchvision loader reads its own."""
        data = self.job.data
        if data.loader == "torchvision":
            return None
        mnist.ensure_files(data.root, data.dataset, data.download)
        return mnist.raw_files(data.root, data.dataset, True) + mnist.raw_files(data.root, data.dataset, False)

    def load_data(self) -> Splits:
        data = self.job.data
        mnist.ensure_files(data.root, data.dataset, data.download)
        train = mnist.load_split(data.root, data.dataset, train=True)
        test = mnist.load_split(data.root, data.dataset, train=False)
        width = 1 if data.sequence == "pixels" else train[0].shape[-1]
        info = {"classes": CLASS_NAMES[data.dataset], "input_size": width}
        val = None
        if data.val_fraction:  # MNIST has no validation split: hold one out (a sweep's points are compared on it)
            train, val = holdout(train, data.val_fraction, data.split_seed)
        return Splits(train=train, test=test, val=val, info=info)

    def torch_dataset(self, train: bool) -> torch.utils.data.Dataset | None:
        """torchvision's Dataset with ToTensor, for `data.loader: torchvision`.  torchvision is
        imported only then: its import pulls in torch._dynamo, triton and sympy (~2.3 CPU-s, every
        rank of every run) and the default loader never uses it."""
        data = self.job.data
        if data.loader != "torchvision":
            return None
        import torchvision

        cls = getattr(torchvision.datasets, mnist.FOLDERS[data.dataset])
        return cls(data.root, train=train, download=False, transform=torchvision.transforms.ToTensor())

    def loader_workers(self) -> int:
        return self.job.data.num_workers

    def build_model(self, info: dict[str, Any]) -> nn.Module:
        m = self.job.model
        return LSTMClassifier(info["input_size"], m.hidden_size, m.num_layers, len(info["classes"]), m.bidirectional, m.dropout)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], info: dict[str, Any]) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(model(as_sequence(images, self.job.data.sequence)), labels)

    def eval_sums(self, model: nn.Module, batch: tuple[torch.Tensor, ...],
                  info: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = model(as_sequence(images, self.job.data.sequence)).float()
        return {
            "loss_sum": F.cross_entropy(logits, labels, reduction="sum"),
            "correct": (logits.argmax(1) == labels).sum(),
            "count": torch.tensor(len(labels), device=labels.device),
        }

    def metrics(self, sums: dict[str, float], info: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        count = max(sums["count"], 1)
        return {
            f"{prefix}loss": sums["loss_sum"] / count,
            f"{prefix}accuracy": sums["correct"] / count,
            f"{prefix}samples": int(sums["count"]),
        }

    def export_signature(self, batch: tuple[torch.Tensor, ...], info: dict[str, Any]) -> ExportSignature:
        """The image as the LSTM reads it: float [batch, steps, pixels per step] in [0, 1] -> logits."""
        x = as_sequence(batch[0], self.job.data.sequence)
        return ExportSignature({"x": x}, {"x": {0: "batch", 1: "steps"}}, ["logits"],
                               metadata={"classes": info["classes"], "sequence": self.job.data.sequence})

    def predict(self, model: nn.Module, info: dict[str, Any], inputs: list[str], options: dict[str, Any]) -> list[str]:
        lines = []
        for name in predict_files(inputs, "image files to classify"):
            pixels = digit_pixels(name)[None]
            with torch.no_grad():
                probs = model(as_sequence(pixels, self.job.data.sequence)).softmax(1)[0]
            p, k = probs.max(0)
            lines.append(f"{name}\t{info['classes'][int(k)]}\t{float(p):.4f}")
        return lines

    def read_labelled(self, files: list[Path], info: dict[str, Any]) -> Split:
        """MNIST's own IDX files (an images file and its labels file, as a pair, .gz or not) or image
        folders (torchvision's ImageFolder layout: one subfolder per class, named by the class or its
        number), read as the run's test split: uint8 [N, 28, 28] images, class ids."""
        return labelled_images(files, info["classes"])

TASK = ClassifyTask
