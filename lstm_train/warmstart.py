"""`train.init_from: RUN_DIR`: a fresh run starts from another run's weights (fine-tuning).

Weights only: the optimizer, the schedule, the step and the random streams start afresh, as in
any new run.  The weights are those the source's result was computed with, as `predict` reads
them (`checkpoint.load_for_predict`: its best/, else its newest checkpoint, its averaged weights
where it averaged; or a model artifact folder).  The source is someone else's as often as not,
so it is read as safetensors and JSON only (no pickle, nothing imported: its task is compared
by name), and it must fit before anything is loaded:

* the same task;
* every tensor of this job's model, of the same shape, and no other (a hidden size or a
  vocabulary of another size is named tensor by tensor);
* the same meaning: what names the rows and outputs of the weights (classes, tags, a
  vocabulary, a tokenizer: the task's info of text and names) must be the source's, even
  where the shapes agree (Fashion-MNIST's ten classes are not MNIST's ten digits).

Numbers of the task's info (a normalisation's means, word counts of new data) may differ: that
is what training on new data is.  Only a run starting afresh reads the source; a resumed run
continues from its own checkpoint and never reads it again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint
from .schema import ConfigError


def load(job: Any, info: dict[str, Any], net: nn.Module) -> dict[str, Any]:
    """The source's weights loaded into `net` (every rank the same files); what result.json
    records of it.  A ConfigError or CheckpointMismatch says why the source cannot be used."""
    directory = Path(job.train.init_from)
    key = f"train.init_from = {directory}"
    if not directory.is_dir():
        raise ConfigError(f"{key}: not a folder (a run directory, or a model artifact's folder)")
    found = checkpoint.load_for_predict(directory)  # safetensors and JSON only; a foreign file refused
    if found is None:
        raise ConfigError(f"{key}: no weights there (no checkpoints/best/, no checkpoint, no model artifact)")
    path, meta, weights = found
    source_task = (meta.get("config") or {}).get("task", "classify")
    if source_task != job.task:
        raise checkpoint.CheckpointMismatch(f"{key}: {path} holds a {source_task} model; this job trains a {job.task} "
                                            "model")
    problems = shape_problems(weights, net) + meaning_problems(meta.get("task_info") or {}, info)
    if problems:
        raise checkpoint.CheckpointMismatch(
            f"{key}: {path} does not fit this job's model:\n  " + "\n  ".join(problems)
            + "\nA warm start keeps every weight's shape and meaning: give this job the source's model.* settings and "
              "data of the same classes, tags or vocabulary, or train it from scratch.")
    checkpoint.load_model_state(net, weights, path)
    return {"init_from": str(directory), "init_weights": str(path), "init_step": meta.get("step"),
            "init_weights_sha1": digest(weights)}


def shape_problems(weights: dict[str, torch.Tensor], net: nn.Module) -> list[str]:
    """Each tensor that differs: another shape, missing from the source, or not in this model."""
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    out = [f"{k}: {list(v.shape)} in the source, {list(own[k])} here" for k, v in weights.items()
           if k in own and tuple(v.shape) != own[k]]
    missing, foreign = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing:
        out.append(f"not in the source: {', '.join(missing[:8])}")
    if foreign:
        out.append(f"not in this model: {', '.join(foreign[:8])}")
    return out


def meaning_problems(source: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """The task info entries that name what the weights' rows mean (text: classes, tags, a
    vocabulary, a tokenizer) and differ between the source and this job's data."""
    out = []
    for key in sorted(set(source) | set(here)):
        a, b = source.get(key), here.get(key)
        if a == b or not (_names(a) or _names(b)):
            continue
        out.append(f"{key}: {_describe(a, b)}")
    return out


def _names(value: Any) -> bool:
    """Whether an info value names things (text), rather than measuring them (numbers)."""
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return any(_names(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_names(v) for v in value)
    return False


def _describe(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list):
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        where = f"; the first difference is entry {first}: {_short(a[first] if first < len(a) else None)} in the " \
                f"source, {_short(b[first] if first < len(b) else None)} here"
        return f"{len(a)} entries in the source, {len(b)} here{where}"
    if isinstance(a, str) and isinstance(b, str) and max(len(a), len(b)) > 60:
        return f"differs ({len(a)} characters in the source, {len(b)} here; digests " \
               f"{hashlib.sha256(a.encode()).hexdigest()[:12]} and {hashlib.sha256(b.encode()).hexdigest()[:12]})"
    return f"{_short(a)} in the source, {_short(b)} here"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def digest(weights: dict[str, torch.Tensor]) -> str:
    """SHA-1 of the weights (names and bytes): which weights the run started from."""
    h = hashlib.sha1()
    for name, tensor in sorted(weights.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
