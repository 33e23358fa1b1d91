"""Checkpoints that are never half-written and never silently wrong.

Each checkpoint is one file, `step-<N>.pt`, written to a temporary name, fsynced
and renamed into place, so the newest file is always complete; a crash while
writing leaves only a `.tmp` that is ignored and cleaned up.  Resuming takes the
newest file that loads, and says so.
"""

from __future__ import annotations

import io
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .runfiles import checkpoint_files, writing

BEST = "best.pt"  # the best weights by the task's primary metric on validation data


class CheckpointMismatch(RuntimeError):
    """A checkpoint whose tensors do not fit the job's model."""


def atomic_save(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary name in the same folder, fsync, rename: readers see the old
    file or the new one, never half of one.

    The state is serialised in memory first: torch.save writing to a full disk
    fails deep in its zip writer ("unexpected pos"), while a plain write fails
    with the OSError that says why, which `writing` turns into a clear error
    (and removes the temporary file).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    newest = checkpoint_files(path.parent)[:1]
    keeps = f"The newest complete checkpoint, {newest[0][1]}, is intact." if newest else ""
    with writing(path, tmp, buffer.getbuffer().nbytes, keeps):
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)


def save(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` atomically as step-<step>.pt and keep only the newest `keep` files
    (the older ones are removed only once the new one is in place)."""
    path = folder / f"step-{step:08d}.pt"
    with writing(path):
        folder.mkdir(parents=True, exist_ok=True)
    atomic_save(path, state)
    for _, old in checkpoint_files(folder)[keep:]:
        old.unlink(missing_ok=True)
    for stale in folder.glob(".step-*.tmp"):
        if not stale.name.endswith(f".{os.getpid()}.tmp"):
            stale.unlink(missing_ok=True)
    return path


def save_best(folder: Path, state: dict[str, Any]) -> Path:
    """The best weights so far (`model`, `step`, `value`, `metrics`, ...) as best.pt."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(folder / BEST, state)
    return folder / BEST


def load(path: Path) -> dict[str, Any]:
    """A checkpoint (or best.pt) as saved, tensors on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)


def load_best(folder: Path) -> dict[str, Any] | None:
    """best.pt's contents, or None when there is none (no validation split, or none yet)."""
    path = folder / BEST
    if not path.is_file():
        return None
    return load(path)


def load_best_weights(folder: Path, step: int) -> dict[str, torch.Tensor]:
    """best.pt's weights, which must be those of `step` (what rank 0 read): a rank whose view of a
    shared filesystem is behind would otherwise end with other weights than the rest."""
    path = folder / BEST
    best = load(path)
    if best["step"] != step:
        raise CheckpointMismatch(f"{path} holds the weights of step {best['step']} here but of step {step} on rank 0: "
                                 "the ranks see different files (a shared filesystem's cache?); run again")
    return best["model"]


def load_latest(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads (skipping unreadable ones with a warning), or None."""
    for _, path in checkpoint_files(folder):
        try:
            return path, load(path)
        except Exception as e:  # truncated by a full disk, or damaged by hand
            warnings.warn(f"skipping unreadable checkpoint {path}: {type(e).__name__}: {e}", stacklevel=2)
    return None


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """load_state_dict with an error that says which tensors differ and what to do."""
    own = model.state_dict()
    problems = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing:
        problems.append(f"missing in checkpoint: {', '.join(missing)}")
    if unexpected:
        problems.append(f"not in the model: {', '.join(unexpected)}")
    if problems:
        raise CheckpointMismatch(
            f"{source} does not fit this job's model (was model.* changed?):\n  "
            + "\n  ".join(problems)
            + "\nUse another train.output_dir for the new model, or delete the old checkpoints."
        )
    model.load_state_dict(state)


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from, so a resume continues the same streams."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
