"""Format 1 -> 2: the single pickled `step-<N>.pt` / `best.pt` of lstm_train before the safe
checkpoint format, read without running code and written again as format 2.

Apart from `checkpoint` because only `lstm-train convert` needs it: the loop and `predict`
never read format 1 (they refuse it, naming this command).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    CHECKPOINTS, OLD_BEST, Best, Checkpoint, NotACheckpoint, SavedLoop, UnreadableCheckpoint, _why, checkpoint_files,
    old_checkpoint_files, save, save_best,
)

# What format 1's pickles need besides tensors and plain containers: numpy's random state
# (an uint32 array).  Rebuilding an empty ndarray of a dtype runs no code of the file's choosing.
_FORMAT_1_GLOBALS = [np.ndarray, np.dtype, np._core.multiarray._reconstruct, type(np.dtype(np.uint32)),
                     (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]  # numpy 1.x's name


def load_format_1(path: Path) -> dict[str, Any]:
    """A format-1 file (`step-<N>.pt`, `best.pt`) read with weights_only=True and only the numpy
    globals its random state needs: a file that needs anything else is refused, unread."""
    try:
        with torch.serialization.safe_globals(_FORMAT_1_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise NotACheckpoint(f"{path} is not a checkpoint written by lstm_train: it needs more than tensors and "
                             f"numpy's random state to load ({_why(e)}); it is not loaded") from e
    except Exception as e:  # noqa: BLE001
        raise UnreadableCheckpoint(f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    if not isinstance(data, dict) or "model" not in data or "step" not in data:
        raise NotACheckpoint(f"{path} is not a checkpoint written by lstm_train (no model and step in it)")
    return data


def _format_1_rng(old: dict[str, Any]) -> dict[str, Any]:
    version, words, gauss = old["python"]
    key, numbers, pos, has_gauss, cached = old["numpy"]
    state = {"python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
             "numpy": {"key": key, "state": torch.from_numpy(np.asarray(numbers).astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": old["torch"]}
    if "cuda" in old:
        state["cuda"] = list(old["cuda"])
    return state


def convert(run_dir: Path) -> list[str]:
    """Every format-1 checkpoint of a run directory written again in format 2 beside it (the old
    files are left as they are); returns one line per file.  Nothing is written unless every
    file reads."""
    folder = Path(run_dir) / CHECKPOINTS
    old = [path for _, path in old_checkpoint_files(folder)]
    best = folder / OLD_BEST
    if not old and not best.is_file():
        raise FileNotFoundError(f"{folder}: no format-1 checkpoint (step-<N>.pt, best.pt) to convert")
    read = [(path, load_format_1(path)) for path in old]
    best_data = load_format_1(best) if best.is_file() else None
    lines = []
    for path, data in read:
        loop = data.get("loop", {})
        target = save(folder, Checkpoint(
            step=int(data["step"]), model=data["model"], optimizer=data["optimizer"], scheduler=data["scheduler"],
            per_rank=[{"rng": _format_1_rng(r)} for r in data["rng"]], world_size=int(data.get("world_size", 1)),
            global_batch=int(data.get("global_batch", 0)), train_seconds=float(data.get("train_seconds", 0.0)),
            loop=SavedLoop(parts=int(loop.get("parts", 1)), counts=dict(loop.get("counts", {})),
                           evals_since_best=int(loop.get("evals_since_best", 0)), last_eval=loop.get("last_eval")),
            task_info=data["task_info"], config=data["config"]), keep=len(read) + len(checkpoint_files(folder)))
        lines.append(f"{path} -> {target}")
    if best_data is not None:
        target = save_best(folder, Best(step=int(best_data["step"]), value=float(best_data["value"]),
                                        metrics=best_data["metrics"], model=best_data["model"],
                                        task_info=best_data["task_info"], config=best_data["config"]))
        lines.append(f"{best} -> {target}")
    return lines
