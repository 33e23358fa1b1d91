"""Writing run files so that a reader sees the old file or the new one, never half of one,
and a full or read-only disk becomes one line naming the directory and its free space."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# errno values that mean "this directory cannot take the file": the user's to fix, not a bug.
_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class RunFileError(ValueError):
    """A run file could not be written: disk full, over quota, read-only or not permitted
    (a ValueError so the CLI prints it and exits 2; the OSError is its __cause__)."""


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one
    (through `write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


# Files we write: never readable by others, group-readable only where the umask allows it
# (the run directory is 0750 for the same reason).  Temporaries are 0600 until renamed.
FILE_MODE = 0o640
DIR_MODE = 0o750


def fsync_path(path: Path, flags: int = 0) -> None:
    """fsync a file or a folder by its path (`flags`: `os.O_DIRECTORY` for a folder, whose fsync
    makes a rename into it durable; `os.O_NOFOLLOW` to refuse a link)."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            f"cannot write {path.name}{f' ({size_text(size)})' if size is not None else ''} in {path.parent}: "
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
    return f"{size_text(usage.free)} free of {size_text(usage.total)} there"


def size_text(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


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
