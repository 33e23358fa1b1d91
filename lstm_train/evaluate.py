"""`lstm-train evaluate RUN_DIR FILE...`: a trained model scored on new labelled data.

The files are read by the task (`Task.read_labelled`, in its own formats, encoded with the
run's info) and scored exactly as the run's test split was: the loop's evaluation batches
(`eval_batches_for`), its one evaluation pass (`tasks.base.evaluate_sums`) under the
precision the run trained in, and the task's `metrics`.  So SST-2's test sentences written
as a CSV score the run's own test accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .data.batching import eval_batches_for
from .tasks.base import evaluate_sums, split_size


def evaluate_files(loaded: tuple[Any, Any, torch.nn.Module, dict[str, Any]], run_dir: Path,
                   files: list[str]) -> dict[str, Any]:
    """The metrics of `loaded` (`cli.load_run`: job, task, model, info) on `files`, as a JSON-able dict."""
    job, task, model, info = loaded
    paths = [Path(f) for f in files]
    for path in paths:
        if not (path.is_file() or path.is_dir()):  # a folder: a task's folder format (image folders)
            raise FileNotFoundError(f"{path}: no such file (give labelled data files to score)")
    split = task.read_labelled(paths, info)
    device = next(model.parameters()).device
    batches = eval_batches_for(job.data, split_size(split), 0, 1, task.lengths(split))
    sums = evaluate_sums(task, model, split, batches, task.autocast(device), info)
    metrics = task.metrics({k: float(v) for k, v in sums.items()}, info, prefix="")
    return {"run_dir": str(run_dir), "task": task.name, "files": [str(p) for p in paths],
            "primary_metric": task.primary(info), "metrics": metrics}
