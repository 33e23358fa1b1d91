"""Tasks: what is learned (data, model, loss, metrics); the training loop is shared.

This package's top level is only the registry (`registry.py`: one `Registration` per task,
built-in or from another package), so that reading a job's schema costs no torch import;
`get_task` imports a task's module on first use.  The contract every task implements is
`lstm_train.tasks.base.Task`; README.md "Adding a task" walks through one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import BUILTIN, BUILTIN_TASKS, GROUP, PredictOption, Registration, registration

if TYPE_CHECKING:
    from .base import Task

# The built-in tasks by name (a job may also name a task of another package: see registry.py).
TASKS: dict[str, Registration] = BUILTIN_TASKS


def get_task(name: str) -> type[Task]:
    """The Task class of a job's `task:` (a built-in name, an entry point's name or a reference)."""
    return registration(name).task_class()


def get_sections(name: str) -> tuple[type, type]:
    """(Data, Model) of a task's job: the `data:` and `model:` sections' schemas, torch-free where
    the registration names a sections module."""
    return registration(name).job_sections()


__all__ = ["BUILTIN", "GROUP", "PredictOption", "Registration", "TASKS", "get_sections", "get_task", "registration"]
