"""Who may write a run directory: created private (0750), refused when another user owns it or
anyone may write it (whoever can write there can swap what the run reads back)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .atomic import DIR_MODE, RunFileError, writing


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
