"""What the person running a job reads: which process speaks, and warnings that read like
the CLI's errors (`warning: ...` on one line, never Python's `file.py:79: UserWarning: ...`
followed by the source line; installed by the CLI and by a submitted job's node, so a job
log reads like a terminal)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import TextIO


def is_main_process() -> bool:
    """Whether this process speaks for the launch: RANK 0, or no launcher at all.  The one
    decision of it outside the loop (which asks its accelerator, whose answer is the same:
    every launcher this package supports sets RANK), so notes, bars and results print once."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: TextIO | None = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


def use_one_line_warnings() -> None:
    warnings.showwarning = one_line_warning


def note(message: str) -> None:
    """A message for the person running the job (data sizes, cut texts, files read): once per
    launch (the main process), on stderr, so that stdout stays machine-readable."""
    if is_main_process():
        print(message, file=sys.stderr, flush=True)
