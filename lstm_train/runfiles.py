"""One home for a run's files: where its directory is, what its id is, and atomic JSON.

A run directory holds everything of one training run, whoever started it
(`lstm-train run`, `accelerate launch`, a SLURM task):

    runs/<job name>/<run id>/
        config.yaml        the resolved job
        checkpoints/       step-<N>/ (newest K) and best/ (model selection): see `checkpoint`
        metrics/           rank-<R>.jsonl, one per process
        result.json        written once, when the run has finished
        submission.json    when it went through `lstm-train submit`

The run id is a hash of what is trained (not where, for how long or how it is
tracked), so re-running the same command lands in the same directory and resumes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULT = "result.json"
SUBMISSION = "submission.json"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")  # a directory (checkpoint format 2)
OLD_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.pt$")  # one pickled file (format 1): `lstm-train convert`

# Sections that say where, how long or how a run is tracked, not what is trained.
VOLATILE_SECTIONS = ("tracking", "slurm", "sweep")
VOLATILE_TRAIN_KEYS = ("output_dir", "run_id")

# errno values that mean "this directory cannot take the file": the user's to fix, not a bug.
_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class RunFileError(ValueError):
    """A run file could not be written: disk full, over quota, read-only or not permitted
    (a ValueError so the CLI prints it and exits 2; the OSError is its __cause__)."""


def identity(spec: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """Ten hex digits that are the same for the same training: the job dict without its
    volatile parts, plus `extra` (the process layout of a submission, a sweep's grid)."""
    spec = {k: v for k, v in spec.items() if k not in VOLATILE_SECTIONS}
    spec["train"] = {k: v for k, v in spec.get("train", {}).items() if k not in VOLATILE_TRAIN_KEYS}
    if extra:
        spec["extra"] = extra
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys where two job dicts differ in what is trained: `key: old -> new`."""
    out = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in VOLATILE_SECTIONS or prefix == "train." and key in VOLATILE_TRAIN_KEYS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def run_id(spec: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    """The run id of a job dict: `train.run_id` if set; under SLURM the job id (a requeued
    job keeps it; an array task is `<array id>_<task>`); otherwise `identity(spec)`."""
    env = os.environ if environ is None else environ
    given = spec.get("train", {}).get("run_id")
    if given:
        return str(given)
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    return identity(spec)


def run_dir(spec: dict[str, Any], environ: dict[str, str] | None = None) -> Path:
    """`train.output_dir` if set, else runs/<job name>/<run id> (relative to the working directory)."""
    given = spec.get("train", {}).get("output_dir")
    if given:
        return Path(given)
    return Path("runs") / spec["name"] / run_id(spec, environ)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one:
    a temporary file in the same directory, fsynced, then renamed over the target."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(data, indent=2, default=str) + "\n"
    with writing(path, tmp, len(text)):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def writing(path: Path, tmp: Path | None = None, size: int | None = None, keeps: str = "") -> Iterator[None]:
    """Around writing `path` (`size` bytes, through `tmp`): whatever fails, `tmp` is removed;
    a full, over-quota, read-only or forbidden directory becomes a RunFileError naming the
    directory and its free space (`keeps` says what is still intact there)."""
    try:
        yield
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if not (isinstance(e, OSError) and e.errno in _CANNOT_WRITE):
            raise
        raise RunFileError(
            f"cannot write {path.name}{f' ({_size(size)})' if size is not None else ''} in {path.parent}: "
            f"{e.strerror or e} ({free_space(path.parent)}). "
            + (keeps + " " if keeps else "")
            + "Free some space (or fix the permissions, or set train.output_dir elsewhere) and run the "
            "same command again: it resumes from the newest checkpoint."
        ) from e


def free_space(folder: Path) -> str:
    """`12.0 MiB free of 1.0 GiB` on the filesystem holding `folder` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError as e:
        return f"free space unknown: {e.strerror}"
    return f"{_size(usage.free)} free of {_size(usage.total)} there"


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def checkpoint_files(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint directories `step-<N>` in a folder, newest first.
    (Here, not in `checkpoint`, so that `lstm-train status` lists them without importing torch.)"""
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
