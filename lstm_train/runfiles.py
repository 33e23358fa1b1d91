"""One home for a run's files: where its directory is, what its id is, what it holds.

A run directory holds everything of one training run, whoever started it
(`lstm-train run`, `accelerate launch`, a SLURM task):

    runs/<job name>/<run id>/
        config.yaml        the resolved job
        checkpoints/       step-<N>/ (newest K) and best/ (model selection): see `checkpoint`
        metrics/           rank-<R>.jsonl, one per process
        result.json        written once, when the run has finished
        submission.json    when it went through `lstm-train submit`
        started.json       when the run began (its first part)

The run id says what the command line changed in the job file and ends in a hash of what is
trained (not where, for how long or how it is tracked): `hidden=128,lr=0.003-3f2a9c`
(`runnames`), so re-running the same command lands in the same directory and resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# The seams of run-file handling live in lstm_train.files (atomic writes, permissions, validation,
# redaction); they are re-exported here so that `from lstm_train.runfiles import write_atomic` keeps working.
from .files.atomic import (  # noqa: F401
    DIR_MODE, FILE_MODE, RunFileError, create_private, exclusive, free_space, temporary_name, write_atomic,
    write_json, writing,
)
from .files.permissions import UnsafeRunDir, check_run_dir, make_run_dir  # noqa: F401
from .files.redaction import REDACTED, credential_lines, is_credential, redact  # noqa: F401
from .files.validation import MAX_RUN_FILE, Raw, RunDirError, check_fields, read_config, read_json, shorten  # noqa: F401

RESULT = "result.json"
SUBMISSION = "submission.json"
CONFIG = "config.yaml"

# Sections that say where, how long or how a run is tracked, not what is trained.
VOLATILE_SECTIONS = ("tracking", "slurm", "sweep")
VOLATILE_TRAIN_KEYS = ("output_dir", "run_id")

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


def run_id(spec: dict[str, Any]) -> str:
    """The run id of a job dict: `train.run_id` if set, else `identity(spec)`.  A job read from a
    job file has a readable one instead (`config.JobBase.run_id`, `runnames`); never the SLURM
    job id, which would make every new sbatch of a job start from zero and two runs in one
    salloc share a directory."""
    given = spec.get("train", {}).get("run_id")
    return str(given) if given else identity(spec)


def run_dir(spec: dict[str, Any]) -> Path:
    """`train.output_dir` if set, else runs/<job name>/<run id> (relative to the working directory)."""
    given = spec.get("train", {}).get("output_dir")
    if given:
        return Path(given)
    return Path("runs") / spec["name"] / run_id(spec)


STARTED = "started.json"


def stamp_started(folder: Path) -> None:
    """Record when a run began, once (its first part; a resume keeps the stamp): `runs` lists it
    and the W&B group is named by its date, the same on every rank and every resume."""
    path = Path(folder) / STARTED
    if not path.exists():
        import time

        write_json(path, {"time": round(time.time(), 3), "date": time.strftime("%Y-%m-%d")})


def started(folder: Path) -> dict[str, Any] | None:
    """The stamp `stamp_started` wrote ({"time": unix s, "date": "YYYY-MM-DD"}), or None."""
    try:
        return read_json(Path(folder) / STARTED, {"time": (int, float), "date": str})
    except RunDirError:
        return None


def shareable(spec: dict[str, Any]) -> dict[str, Any]:
    """What of a job may travel (W&B config, checkpoints, the model artifact): what is trained,
    without the tracking, slurm and sweep sections (where, how long and how it is tracked, where
    setup lines and tokens live), credentials redacted."""
    return redact({k: v for k, v in spec.items() if k not in VOLATILE_SECTIONS})


# The fields of run files that the project reads back, with their types (`read_json(path, FIELDS)`).
RESULT_FIELDS: dict[str, Any] = {"primary_metric": str, "higher_is_better": bool, "steps": int, "world_size": int,
                                 "train_seconds": (int, float), "run_dir": str}
SUBMISSION_FIELDS: dict[str, Any] = {"kind": str, "executor": str, "job_ids": list, "run_dir": str, "folder": str,
                                     "world_size": int, "logs": dict, "wandb": dict, "earlier": (list,),
                                     "points": (list,), "submitted_at": str}
