"""Checkpoints that are never half-written, never silently wrong, and never run code.

A checkpoint is a directory, written under a temporary name and renamed into place,
so a reader sees all of it or none of it:

    checkpoints/step-00000100/
        model.safetensors   the plain module's weights (safetensors: nothing in it executes)
        average.safetensors the averaged weights, with train.ema / train.ntasgd (meta.json's
                            "average" holds their step count and start step)
        state.pt            optimizer, scheduler, GradScaler (fp16) and per-rank state
                            (random generators as tensors, anything a task carries between
                            steps); read with torch.load(weights_only=True) and nothing else
        meta.json           format and version, step, world size, global batch, training
                            time, the saved part of the loop state, the task's info, the job
    checkpoints/best/       model.safetensors + meta.json: model selection's weights
    checkpoints/top/step-N/ the same, for each of the k best evaluations (train.select.keep_best > 1)

`Checkpoint` and `Best` are those directories in memory; `SavedLoop` is the part of the
loop's state a resumed run continues (train.LoopState holds it beside what belongs to one
process only).  Run directories are shared and copied between people, so a file that does
not load this way is refused with a message naming it, never loaded "to see"; the single
pickled `step-<N>.pt` / `best.pt` of lstm_train before format 2 is refused with the command
that converts it (`lstm-train convert RUN_DIR`, which reads it with a fixed allow-list).

Where checkpoints are (`CHECKPOINTS`, `checkpoint_files`) lives here beside what they hold, so
that following a run's checkpoints means reading one module.  torch, numpy and safetensors are
imported only by the functions that read or write tensors: `lstm-train status` lists a run's
checkpoints on a login node without loading them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from .files.atomic import fsync_path
from .files.validation import RunDirError, read_run_bytes
from .runfiles import VOLATILE_SECTIONS, writing

if TYPE_CHECKING:  # torch, numpy and safetensors are imported where tensors are read or written:
    import torch  # `lstm-train status` lists checkpoints on a login node without paying for them

CHECKPOINTS = "checkpoints"  # in the run directory
CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")  # a directory (checkpoint format 2)
OLD_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")  # one pickled file (format 1): `lstm-train convert`
FORMAT = "lstm_train.checkpoint"
FORMAT_VERSION = 2
MODEL_FILE = "model.safetensors"
AVERAGE_FILE = "average.safetensors"  # the averaged weights (train.ema / train.ntasgd), beside the raw ones
STATE_FILE = "state.pt"
META_FILE = "meta.json"
BEST = "best"  # the best weights by the selected validation metric (train.select; `selection`)
TOP = "top"  # train.select.keep_best > 1: the k best evaluations' weights, top/step-N/
OLD_BEST = "best.pt"  # format 1


class CheckpointMismatch(RuntimeError):
    """A checkpoint whose tensors do not fit the job's model."""


class NotACheckpoint(ValueError):
    """A file in a checkpoint's place that lstm_train did not write (or that would need code run
    to read it): refused, never skipped (a ValueError: the CLI prints it and exits 2)."""


class OldFormatCheckpoint(NotACheckpoint):
    """A checkpoint of lstm_train's format 1 (one pickled file): `lstm-train convert` reads it safely."""

    def __init__(self, path: Path) -> None:
        run_dir = path.parent.parent
        super().__init__(f"{path} is a checkpoint of an older lstm_train (format 1, a pickle): it is not loaded as "
                         f"it is, since a pickle can run code. To convert it safely, run: lstm-train convert {run_dir}")


class UnreadableCheckpoint(ValueError):
    """A checkpoint directory of ours that is damaged (a file missing or truncated): the newest
    one of these is skipped, with a warning, for the newest that reads."""


@dataclass
class SavedLoop:
    """The part of the loop's state that a checkpoint carries and a resumed run continues."""

    parts: int = 1  # how many times the run has been started, this part included
    counts: dict[str, int] = field(default_factory=dict)  # samples/tokens/padded of the whole run, all ranks
    evals_since_best: int = 0  # evaluations since patience's last improvement (train.early_stopping.min_delta)
    last_eval: int | None = None  # the step of the last evaluation
    stop_reference: float | None = None  # the value of that improvement (None in checkpoints before it was saved)
    init: dict[str, Any] | None = None  # train.init_from: the weights the run started from (`warmstart`)


@dataclass
class Checkpoint:
    """One checkpoint directory in memory (tensors on the CPU).

    `per_rank` has one dict per rank: "rng" (every random generator training draws from,
    see `rng_state`) and whatever else that rank carries from step to step ("carry": a dict
    of tensors, say a language model's hidden state); restored only at the same world size."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    per_rank: list[dict[str, Any]]
    world_size: int
    global_batch: int
    train_seconds: float
    loop: SavedLoop
    task_info: dict[str, Any]
    config: dict[str, Any]
    scaler: dict[str, Any] | None = None  # fp16's GradScaler
    average: dict[str, torch.Tensor] | None = None  # averaged weights (train.ema / train.ntasgd), average.safetensors
    average_meta: dict[str, Any] | None = None  # their step count and start step (meta.json's "average")
    format_version: int = FORMAT_VERSION


@dataclass
class Best:
    """checkpoints/best/ (or one of top/): model selection's weights and why they were chosen."""

    step: int
    value: float
    metrics: dict[str, Any]
    model: dict[str, torch.Tensor]
    task_info: dict[str, Any]
    config: dict[str, Any]
    format_version: int = FORMAT_VERSION
    selected_by: dict[str, Any] | None = None  # `Selection.describe()`; None: written before train.select


# ---------------------------------------------------------------------------
# Where they are


def checkpoint_files(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint directories `step-<N>` in a folder, newest first."""
    return _listed(folder, CHECKPOINT_NAME, directories=True)


def old_checkpoint_files(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of format-1 checkpoint files `step-<N>.pt` in a folder, newest first."""
    return _listed(folder, OLD_CHECKPOINT_NAME, directories=False)


def _listed(folder: Path, pattern: re.Pattern[str], directories: bool) -> list[tuple[int, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := pattern.match(p.name)) and not p.is_symlink() and p.is_dir() == directories]
    return sorted(found, reverse=True)


# ---------------------------------------------------------------------------
# Writing


def save(folder: Path, checkpoint: Checkpoint, keep: int) -> Path:
    """Write `checkpoint` atomically as step-<step>/ and keep only the newest `keep` (the older
    ones are removed only once the new one is in place)."""
    path = folder / f"step-{checkpoint.step:08d}"
    state = {"optimizer": checkpoint.optimizer, "scheduler": checkpoint.scheduler, "scaler": checkpoint.scaler,
             "per_rank": checkpoint.per_rank}
    meta = {"step": checkpoint.step, "world_size": checkpoint.world_size, "global_batch": checkpoint.global_batch,
            "train_seconds": checkpoint.train_seconds, "loop": asdict(checkpoint.loop)}
    if checkpoint.average_meta is not None:
        meta["average"] = {**checkpoint.average_meta, "saved": checkpoint.average is not None}
    files = {MODEL_FILE: weights_bytes(checkpoint.model), STATE_FILE: _torch_bytes(state),
             META_FILE: _meta_bytes(meta, checkpoint.task_info, checkpoint.config, path)}
    if checkpoint.average is not None:
        files[AVERAGE_FILE] = weights_bytes(checkpoint.average)
    write_directory(path, files)
    for _, old in checkpoint_files(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def save_best(folder: Path, best: Best) -> Path:
    """The best weights so far as best/ (model.safetensors + meta.json), atomically."""
    return _write_best(folder / BEST, best)


def _write_best(path: Path, best: Best) -> Path:
    meta = {"step": best.step, "value": best.value, "metrics": best.metrics}
    if best.selected_by is not None:
        meta["selected_by"] = best.selected_by
    write_directory(path, {MODEL_FILE: weights_bytes(best.model),
                           META_FILE: _meta_bytes(meta, best.task_info, best.config, path)})
    return path


def save_top(folder: Path, best: Best, keep: set[int]) -> Path:
    """One of the k best evaluations as top/step-N/ (as best/ is written: atomically), then every
    other entry of top/ whose step is not in `keep` removed, only once the new one is in place."""
    path = _write_best(Path(folder) / TOP / f"step-{best.step:08d}", best)
    prune_top(folder, keep)
    return path


def prune_top(folder: Path, keep: set[int]) -> None:
    """Remove the entries of top/ whose step is not in `keep`: each renamed aside first (atomic), so
    that a crash mid-removal leaves a stale temporary name, removed later, never half an entry."""
    top = Path(folder) / TOP
    for step, path in checkpoint_files(top):
        if step not in keep:
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old.tmp", dir=top))
            os.rename(path, aside / path.name)
            shutil.rmtree(aside, ignore_errors=True)


def read_top(folder: Path) -> list[dict[str, Any]]:
    """{"step", "value", "metrics", "selected_by"} of each entry of top/ (meta.json only, newest
    first); a damaged one is skipped with a warning (the next change of the ranking removes it)."""
    entries = []
    for step, path in checkpoint_files(Path(folder) / TOP):
        try:
            meta = read_meta(path)
            entries.append({"step": int(meta["step"]), "value": float(meta["value"]), "metrics": dict(meta["metrics"]),
                            "selected_by": meta.get("selected_by")})
        except UnreadableCheckpoint as e:
            print(f"warning: skipping unreadable kept-best entry {path}: {e}", file=sys.stderr, flush=True)
        except (KeyError, TypeError, ValueError) as e:
            raise NotACheckpoint(f"{path / META_FILE} is not a checkpoint written by lstm_train: {type(e).__name__} {e}") from e
    return entries


def write_directory(path: Path, files: dict[str, bytes]) -> None:
    """`files` as the directory `path`, all or nothing: a fresh temporary directory beside it
    (mkdtemp: a random name created exclusively, mode 0700, so nobody else can plant or
    replace a file in it), each file created exclusively (never through a symlink), fsynced,
    then the directory renamed into place and the rename fsynced.

    Serialised before anything is written, so a full disk fails with the OSError that says
    why, which `writing` turns into a clear error.  A directory of the same name (the same
    step saved again after an evaluation) is moved aside first and removed after."""
    folder = path.parent
    size = sum(len(data) for data in files.values())
    newest = checkpoint_files(folder)[:1]
    keeps = f"The newest complete checkpoint, {newest[0][1]}, is intact." if newest else ""
    with writing(path, None, size, keeps):
        folder.mkdir(parents=True, exist_ok=True)
        tmp: Path | None = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
        try:
            for name, data in files.items():
                fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            fsync_path(tmp, os.O_DIRECTORY)
            aside = None
            if path.is_dir() and not path.is_symlink():
                aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old.tmp", dir=folder))
                os.rename(path, aside / path.name)
            os.rename(tmp, path)
            tmp = None
            fsync_path(folder, os.O_DIRECTORY)  # make the rename itself durable
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    for stale in folder.iterdir():  # ours, left by a writer that crashed (one writer per run: the lock)
        if _STALE.match(stale.name):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() and not stale.is_symlink() else stale.unlink()


_STALE = re.compile(r"^\.(step-\d+|best|model-artifact)\.[^/]*\.tmp$")  # write_directory's temporary names


def weights_bytes(model: dict[str, torch.Tensor]) -> bytes:
    """safetensors wants contiguous tensors that share no memory (tied weights are copied:
    load_state_dict ties them again)."""
    import safetensors.torch

    seen: set[int] = set()
    plain = {}
    for name, tensor in model.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        plain[name] = tensor
    return safetensors.torch.save(plain, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})


def _torch_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return bytes(buffer.getbuffer())


def _meta_bytes(meta: dict[str, Any], task_info: dict[str, Any], config: dict[str, Any], path: Path) -> bytes:
    """meta.json: plain JSON (a value that is not JSON is an error naming it, never a `str()` that
    would read back different); the job without its tracking/slurm/sweep sections."""
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "task_info": task_info,
            "config": {k: v for k, v in config.items() if k not in VOLATILE_SECTIONS}}

    def plain(value: Any) -> Any:
        import numpy as np
        import torch

        if isinstance(value, (np.generic, torch.Tensor)) and value.ndim == 0:
            return value.item()
        raise TypeError(f"{type(value).__name__} value {str(value)[:80]!r} in {path / META_FILE} is not JSON: "
                        "task info, metrics and the job must be plain values (str, numbers, lists, dicts)")

    return (json.dumps(full, indent=1, default=plain, allow_nan=True) + "\n").encode()


# ---------------------------------------------------------------------------
# Reading


def load(path: Path) -> Checkpoint:
    """A checkpoint directory, tensors on the CPU.  Raises NotACheckpoint for anything we did not
    write (OldFormatCheckpoint for our format 1) and UnreadableCheckpoint for a damaged one."""
    import torch

    path = Path(path)
    meta = read_meta(path)
    model = read_weights(path)
    state_file = path / STATE_FILE
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # complete, but holds something other than tensors and plain data
        raise NotACheckpoint(f"{state_file} is not a checkpoint written by lstm_train: it does not load with "
                             f"torch.load(weights_only=True) ({_why(e)}); it is not loaded") from e
    except Exception as e:  # noqa: BLE001 (missing, truncated: the zip reader's errors are RuntimeErrors)
        raise UnreadableCheckpoint(f"{state_file}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    try:
        return Checkpoint(
            step=int(meta["step"]), model=model, optimizer=state["optimizer"], scheduler=state["scheduler"],
            per_rank=list(state["per_rank"]), world_size=int(meta["world_size"]),
            global_batch=int(meta["global_batch"]), train_seconds=float(meta["train_seconds"]),
            loop=SavedLoop(**{f.name: meta["loop"][f.name] for f in fields(SavedLoop) if f.name not in _NEWER_LOOP},
                           **{name: meta["loop"].get(name) for name in _NEWER_LOOP}),
            task_info=meta["task_info"], config=meta["config"], scaler=state.get("scaler"),
            average=read_weights(path, AVERAGE_FILE) if (meta.get("average") or {}).get("saved") else None,
            average_meta=meta.get("average"), format_version=int(meta["format_version"]))
    except (KeyError, TypeError, ValueError) as e:
        raise NotACheckpoint(f"{path} is not a checkpoint written by lstm_train: {type(e).__name__} {e} in its "
                             f"{META_FILE} or {STATE_FILE}") from e


_NEWER_LOOP = ("stop_reference", "init")  # loop fields a checkpoint of an earlier version lacks (None then)


def _why(error: Exception) -> str:
    """The line of torch's weights_only refusal that names what the file asked for."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if "but got" in line or "Unsupported" in line), lines[0] if lines else "")[:300]


def read_meta(path: Path) -> dict[str, Any]:
    """meta.json of a checkpoint (or best/, or a model artifact) directory, its format checked."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        raise OldFormatCheckpoint(path)
    file = path / META_FILE
    try:
        meta = json.loads(read_run_bytes(file))  # the one run-file reader: no symlink followed, bounded
    except RunDirError as e:
        raise NotACheckpoint(str(e)) from None
    except (OSError, ValueError) as e:  # missing or half-written: skipped for an older one; never quoted
        raise UnreadableCheckpoint(f"{file}: {type(e).__name__}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NotACheckpoint(f"{file} is not a checkpoint written by lstm_train (its \"format\" is not {FORMAT!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise NotACheckpoint(f"{file} has checkpoint format_version {version!r}; this lstm_train reads "
                             f"{FORMAT_VERSION} (written by another version of lstm_train? use that one)")
    return meta


def read_weights(path: Path, name: str = MODEL_FILE) -> dict[str, torch.Tensor]:
    """model.safetensors (or average.safetensors) of a checkpoint directory (safetensors: reading it runs nothing)."""
    import safetensors.torch

    file = Path(path) / name
    if file.is_symlink():
        raise NotACheckpoint(f"{file}: a symlink; a checkpoint's files are read only as plain files")
    try:
        return safetensors.torch.load_file(file, device="cpu")
    except Exception as e:  # noqa: BLE001 (missing, truncated: safetensors' own error types)
        raise UnreadableCheckpoint(f"{file}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e


def load_latest(folder: Path) -> tuple[Path, Checkpoint] | None:
    """The newest checkpoint that reads (a damaged one skipped with a one-line warning), or None.
    A checkpoint we did not write is refused, as is a folder holding only format-1 files."""
    for _, path in checkpoint_files(folder):
        try:
            return path, load(path)
        except UnreadableCheckpoint as e:  # truncated by a full disk, or damaged by hand
            print(f"warning: skipping unreadable checkpoint {path}: {e}", file=sys.stderr, flush=True)
    refuse_old_format(folder)
    return None


def refuse_old_format(folder: Path) -> None:
    """Raise OldFormatCheckpoint naming the newest format-1 file of `folder`, if it has one."""
    old = old_checkpoint_files(folder)
    if old:
        raise OldFormatCheckpoint(old[0][1])
    if (Path(folder) / OLD_BEST).is_file():
        raise OldFormatCheckpoint(Path(folder) / OLD_BEST)


def load_best(folder: Path) -> Best | None:
    """best/, or None when there is none (no validation split, or none yet)."""
    path = Path(folder) / BEST
    if not path.is_dir():
        if (Path(folder) / OLD_BEST).is_file():
            raise OldFormatCheckpoint(Path(folder) / OLD_BEST)
        return None
    meta = read_meta(path)
    try:
        return Best(step=int(meta["step"]), value=float(meta["value"]), metrics=meta["metrics"],
                    model=read_weights(path), task_info=meta["task_info"], config=meta["config"],
                    selected_by=meta.get("selected_by"))
    except (KeyError, TypeError, ValueError) as e:
        raise NotACheckpoint(f"{path / META_FILE} is not a checkpoint written by lstm_train: {type(e).__name__} {e}") from e


def load_for_predict(directory: Path) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]] | None:
    """(source, meta, weights) that `predict`, `evaluate`, `export` and `generate` use: the
    weights result.json's test metric was computed with (`evaluated_weights`), reading only
    safetensors and JSON: a run directory's best/ (model selection's choice, where the task has
    validation data) or else its newest checkpoint, its averaged weights where train.ema or
    train.ntasgd averaged them; or a model artifact as `wandb artifact get` lays it out
    (model.safetensors, meta.json, config.yaml, the run files, flat in one folder)."""
    directory = Path(directory)
    folder = directory / CHECKPOINTS
    if not folder.is_dir() and (directory / META_FILE).is_file():  # a downloaded model artifact
        meta = read_meta(directory)
        if (meta.get("average") or {}).get("saved") and not (directory / AVERAGE_FILE).exists():
            print(f"warning: {directory} is a model artifact staged before its averaged weights were its model: it "
                  "holds the raw weights, not those its result was computed with", file=sys.stderr, flush=True)
            return directory, meta, read_weights(directory)
        return directory, meta, evaluated_weights(directory, meta)
    best = folder / BEST
    if best.is_dir():
        return best, read_meta(best), read_weights(best)  # chosen on validation with the weights evaluated
    if (folder / OLD_BEST).is_file():
        raise OldFormatCheckpoint(folder / OLD_BEST)
    for _, path in checkpoint_files(folder):
        try:
            meta = read_meta(path)
            return path, meta, evaluated_weights(path, meta)
        except UnreadableCheckpoint as e:
            print(f"warning: skipping unreadable checkpoint {path}: {e}", file=sys.stderr, flush=True)
    refuse_old_format(folder)
    return None


def evaluated_weights(path: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint's evaluations used: its model.safetensors, with the averaged
    tensors of average.safetensors in their place where the average had begun (train.ema, or
    train.ntasgd once switched): what `train` swaps in to validate and test (`averaging`)."""
    weights = read_weights(path)
    if not (meta.get("average") or {}).get("saved"):
        return weights
    average = read_weights(path, AVERAGE_FILE)
    problem = _average_problem({k: tuple(v.shape) for k, v in weights.items()},
                               {k: tuple(v.shape) for k, v in average.items()})
    if problem:
        raise NotACheckpoint(f"{Path(path) / AVERAGE_FILE}: {problem}")
    return {**weights, **{k: v.to(weights[k].dtype) for k, v in average.items()}}


def _average_problem(model: dict[str, tuple[int, ...]], average: dict[str, tuple[int, ...]]) -> str | None:
    """Why averaged tensors cannot stand in for a model's (a name it lacks, another shape), or None."""
    foreign = sorted(set(average) - set(model))
    if foreign:
        return f"averages tensors the model does not have ({', '.join(foreign[:5])})"
    shaped = [f"{k} {list(v)} vs {list(model[k])}" for k, v in average.items() if model[k] != v]
    return f"averaged tensors of another shape than the model's ({'; '.join(shaped[:5])})" if shaped else None


def tensor_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of each tensor of a safetensors file, from its header alone."""
    import safetensors

    try:
        with safetensors.safe_open(str(file), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 (missing, truncated: safetensors' own error types)
        raise UnreadableCheckpoint(f"{file}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e


def shape_problem(path: Path, meta: dict[str, Any], model: dict[str, tuple[int, ...]]) -> str | None:
    """Why checkpoint `path` (headers only) cannot be loaded into a model whose state has these
    shapes: a weight or an averaged tensor of another shape, missing or foreign; None if it fits.
    Asked before anything is written, so that a resume refused leaves the run directory as it was."""
    weights = tensor_shapes(Path(path) / MODEL_FILE)
    shaped = [f"{k} {list(v)} vs {list(model[k])}" for k, v in weights.items() if k in model and model[k] != v]
    missing, foreign = sorted(set(model) - set(weights)), sorted(set(weights) - set(model))
    if shaped or missing or foreign:
        parts = ([f"shapes differ: {'; '.join(shaped[:5])}"] if shaped else []) + \
            ([f"missing: {', '.join(missing[:5])}"] if missing else []) + ([f"not in the model: {', '.join(foreign[:5])}"] if foreign else [])
        return f"{Path(path) / MODEL_FILE} does not fit this job's model ({'; '.join(parts)})"
    if (meta.get("average") or {}).get("saved"):
        problem = _average_problem(model, tensor_shapes(Path(path) / AVERAGE_FILE))
        if problem:
            return f"{Path(path) / AVERAGE_FILE}: {problem}"
    return None


def load_best_weights(folder: Path, step: int) -> dict[str, torch.Tensor]:
    """best/'s weights, which must be those of `step` (what rank 0 read): a rank whose view of a
    shared filesystem is behind would otherwise end with other weights than the rest."""
    path = Path(folder) / BEST
    found = int(read_meta(path)["step"])
    if found != step:
        raise CheckpointMismatch(f"{path} holds the weights of step {found} here but of step {step} on rank 0: "
                                 "the ranks see different files (a shared filesystem's cache?); run again")
    return read_weights(path)


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


# ---------------------------------------------------------------------------
# Random generators as tensors and plain values (what weights_only=True reads)


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from, so a resume continues the same streams."""
    import numpy as np
    import torch

    version, words, gauss = random.getstate()
    key, numbers, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {"key": key, "state": torch.from_numpy(numbers.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["key"], npy["state"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
