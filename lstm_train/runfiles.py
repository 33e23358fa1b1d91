"""One home for a run's files: where its directory is, what its id is, and atomic JSON.

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

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
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


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one
    (through `write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


# Files we write: never readable by others, group-readable only where the umask allows it
# (the run directory is 0750 for the same reason).  Temporaries are 0600 until renamed.
FILE_MODE = 0o640
DIR_MODE = 0o750


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def create_private(path: Path, binary: bool = False) -> Any:
    """Open a new file for writing that nobody else can have prepared: O_CREAT | O_EXCL |
    O_NOFOLLOW, mode 0600.  A file or symlink already at `path` is an error, never followed."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o600)
    return os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8")


def temporary_name(path: Path) -> Path:
    """A temporary beside `path` with an unguessable name (a published pid or token would let
    someone plant a symlink there first; `create_private` refuses one anyway)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def write_atomic(path: Path, data: str | bytes, keeps: str = "") -> None:
    """The one writer of run files: a private temporary in the target directory (O_EXCL |
    O_NOFOLLOW, 0600, random name), fsynced, given FILE_MODE (less what the umask removes),
    then renamed over `path`, so readers see the old file or the new one and a symlink planted
    at `path` is replaced, not followed."""
    path = Path(path)
    tmp = temporary_name(path)
    with writing(path, tmp, len(data), keeps):
        with create_private(tmp, binary=isinstance(data, bytes)) as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)


class UnsafeRunDir(RunFileError):
    """A run directory this user must not write into: another user's, or writable by anyone."""


def make_run_dir(path: Path) -> Path:
    """Create a run directory (and missing parents) 0750, never wider than the umask allows,
    and check that it is safe to write into (`check_run_dir`)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        with writing(p):
            p.mkdir(mode=DIR_MODE, exist_ok=True)
    check_run_dir(path)
    return path


def check_run_dir(path: Path, warn: Any = None) -> None:
    """Refuse a run directory owned by another user or writable by others (whoever can write
    there can swap the files this run later reads back).  A group-writable one is allowed with a
    warning: a shared group directory (setgid project folder, umask 002) is a team's deliberate
    choice, and refusing it would stop that team; the warning says what it means."""
    st = os.stat(path)
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        owner = _user(st.st_uid)
        raise UnsafeRunDir(
            f"{path} belongs to {owner}, not to you: a run directory is written by its owner only "
            "(their files could be replaced under you, yours under them). Copy it "
            f"(cp -r {path} NEW_DIR) and use train.output_dir=NEW_DIR, or set another train.output_dir.")
    if st.st_mode & stat.S_IWOTH:
        raise UnsafeRunDir(
            f"{path} is writable by every user (mode {stat.S_IMODE(st.st_mode):o}): anyone could plant files "
            f"that this run reads back. Run `chmod o-w {path}` or set another train.output_dir.")
    if st.st_mode & stat.S_IWGRP:
        import warnings

        warnings.warn(
            f"{path} is writable by its group (mode {stat.S_IMODE(st.st_mode):o}): every member of the group "
            "can change what this run reads back. Fine for a shared project folder; otherwise "
            f"`chmod g-w {path}`.", stacklevel=2)


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


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


class RunDirError(ValueError):
    """A file read back from a run directory is malformed or hand-edited wrongly (a ValueError:
    the CLI prints it and exits 2); the message names the file and the field."""


def read_json(path: Path, fields: dict[str, type | tuple[type, ...]] | None = None) -> dict[str, Any] | None:
    """A JSON object from a run file, or None when the file is missing.  A file that is there
    but is not a JSON object, or whose `fields` (name -> type) have another type, is a
    RunDirError naming the file and the field: never a traceback, never silently ignored."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RUN_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunDirError(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(raw) > MAX_RUN_FILE:
        raise RunDirError(f"{path}: over {_size(MAX_RUN_FILE)}, not a file lstm_train wrote")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); restore it, or remove it to start that part over") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object, found {type(data).__name__}")
    check_fields(path, data, fields or {})
    return data


def check_fields(path: Path, data: dict[str, Any], fields: dict[str, type | tuple[type, ...]]) -> None:
    """Each present field of `fields` has its type (a list type checks its items as strings)."""
    for name, kind in fields.items():
        if name not in data or data[name] is None:
            continue
        value = data[name]
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)
        else:
            ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)))
        if not ok:
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise RunDirError(f"{path}: field {name!r} should be {'a list of ids' if kind is list else want}, "
                              f"found {shorten(value)}")


# Files lstm_train writes into a run directory are small; a bigger one was put there by hand.
MAX_RUN_FILE = 64 * 1024 * 1024


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a dict; malformed -> RunDirError naming it."""
    import yaml

    path = Path(path)
    try:
        if path.stat().st_size > MAX_RUN_FILE:
            raise RunDirError(f"{path}: over {_size(MAX_RUN_FILE)}, not a config.yaml lstm_train wrote")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: cannot read it ({e})") from None
    except yaml.YAMLError as e:
        raise RunDirError(f"{path}: not valid YAML ({shorten(str(e), 200)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a mapping of job sections, found {type(data).__name__}")
    for section in ("train", "data", "model"):
        if section in data and not isinstance(data[section], dict):
            raise RunDirError(f"{path}: field {section!r} should be a mapping, found {shorten(data[section])}")
    return data


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


# ---------------------------------------------------------------------------
# Secrets: what of a job may be written where others can read it

REDACTED = "<redacted>"
# A key that names a credential: one of its words (split at _ - .) is one of these
# (api_key, WANDB_API_KEY, HF_TOKEN, client_secret, password; not tokenizer or max_tokens).
_CREDENTIAL_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
# Inside a string (a shell line of slurm.setup, an sbatch option): NAME=value or NAME: value.
_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)")


def is_credential(name: str) -> bool:
    """Whether a key or variable name looks like a credential's."""
    return any(w in _CREDENTIAL_WORDS for w in re.split(r"[_\-.]", name.lower()))


def redact(value: Any) -> Any:
    """A copy of a job dict (or any JSON-like value) with credentials replaced by <redacted>:
    the value of every key that looks like one, and `NAME=value` inside strings where NAME does."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_credential(k) and v not in (None, "", [], {})
                and not isinstance(v, (dict, bool)) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}" if is_credential(m.group(1))
                               else m.group(0), value)
    return value


def shareable(spec: dict[str, Any]) -> dict[str, Any]:
    """What of a job may travel (W&B config, checkpoints, the model artifact): what is trained,
    without the tracking, slurm and sweep sections (where, how long and how it is tracked, where
    setup lines and tokens live), credentials redacted."""
    return redact({k: v for k, v in spec.items() if k not in VOLATILE_SECTIONS})


def credential_lines(lines: list[str]) -> list[str]:
    """The variable names that shell lines (slurm.setup) set to a credential."""
    return [m.group(1) for line in lines for m in _ASSIGNMENT.finditer(str(line))
            if is_credential(m.group(1)) and m.group(3) != REDACTED]


class Raw(str):
    """A string `shorten` shows as it is (JSON text, say), not as its repr."""


def shorten(value: Any, limit: int = 80) -> str:
    """repr(value), cut to about `limit` characters for an error message (a 1 MB CSV header or a
    pasted text must not become a 1 MB message)."""
    text = value if isinstance(value, Raw) else repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text):,} characters)"



# The fields of run files that the project reads back, with their types (`read_json(path, FIELDS)`).
RESULT_FIELDS: dict[str, Any] = {"primary_metric": str, "higher_is_better": bool, "steps": int, "world_size": int,
                                 "train_seconds": (int, float), "run_dir": str}
SUBMISSION_FIELDS: dict[str, Any] = {"kind": str, "executor": str, "job_ids": list, "run_dir": str, "folder": str,
                                     "world_size": int, "logs": dict, "wandb": dict, "earlier": (list,),
                                     "points": (list,), "submitted_at": str}


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock (flock on `path`, created 0600 if missing) for the block; a second
    holder waits.  For short critical sections (`submit`), not for a run's lifetime (runlock)."""
    import fcntl

    fd = os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
