"""Warnings that read like the CLI's errors: `warning: ...` on one line, never Python's
`file.py:79: UserWarning: ...` followed by the source line.  Installed by the CLI and by
a submitted job's node, so a job log reads like a terminal."""

from __future__ import annotations

import os
import sys
import warnings
from typing import TextIO


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: TextIO | None = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


def use_one_line_warnings() -> None:
    warnings.showwarning = one_line_warning


def is_main_process() -> bool:
    """Rank 0 of a launch (or no launcher): the one process that speaks for all.  Read from the
    launcher's RANK, so it holds before any process group exists (data preparation, start-up)."""
    return int(os.environ.get("RANK", "0")) == 0


def note(message: str) -> None:
    """A message for the person running the job (data sizes, cut texts, files read): once per
    launch (the main process), on stderr, so that stdout stays machine-readable."""
    if is_main_process():
        print(message, file=sys.stderr, flush=True)
