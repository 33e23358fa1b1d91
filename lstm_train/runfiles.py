"""One home for a run's files: where its directory is, what its id is, and atomic JSON.

A run directory holds everything of one training run, whoever started it
(`lstm-train run`, `accelerate launch`, a SLURM task):

    runs/<job name>/<run id>/
        config.yaml        the resolved job
        checkpoints/       step-<N>.pt (newest K) and best.pt (model selection)
        metrics/           rank-<R>.jsonl, one per process
        result.json        written once, when the run has finished
        submission.json    when it went through `lstm-train submit`

The run id is a hash of what is trained (not where, for how long or how it is
tracked), so re-running the same command lands in the same directory and resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

RESULT = "result.json"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"

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
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=2, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
