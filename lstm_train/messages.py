"""Warnings that read like the CLI's errors: `warning: ...` on one line, never Python's
`file.py:79: UserWarning: ...` followed by the source line.  Installed by the CLI and by
a submitted job's node, so a job log reads like a terminal."""

from __future__ import annotations

import sys
import warnings
from typing import TextIO


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: TextIO | None = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


def use_one_line_warnings() -> None:
    warnings.showwarning = one_line_warning
