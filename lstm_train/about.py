"""What ran: this package's version, its git commit when run from a checkout, and the
versions of the libraries whose behaviour a result depends on.

Read from the installed distributions' metadata (no import of torch or wandb), so
`lstm-train --version` answers at once and result.json / the W&B config can say
which code produced a number.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "accelerate", "submitit", "wandb")


def version(distribution: str = "lstm_train") -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """HEAD of the checkout this package is imported from (`+dirty` when it has uncommitted
    changes to tracked files); None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str | None]:
    """{"lstm_train": ..., "git_commit": ..., "torch": ..., ...}: recorded with every result."""
    return {"lstm_train": version(), "git_commit": git_commit(), **{lib: version(lib) for lib in LIBRARIES}}


def version_line() -> str:
    v = versions()
    commit = f", git {v['git_commit'][:12]}{'+dirty' if v['git_commit'].endswith('+dirty') else ''}" if v["git_commit"] else ""
    libs = ", ".join(f"{lib} {v[lib]}" for lib in LIBRARIES)
    return f"lstm-train {v['lstm_train']}{commit} ({libs})"
