"""Tasks: what is learned (data, model, loss, metrics); the training loop is shared.

This package's top level is only the registry, so that reading a job's schema
name costs no torch import; `get_task` imports a task's module on first use
(forecasting pulls in statsmodels, which a classification run should not pay for).
The contract every task implements is `lstm_train.tasks.base.Task`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Task

# task name -> module holding its Task subclass as `TASK`.
TASKS = {
    "classify": "lstm_train.tasks.classify",
    "forecast": "lstm_train.tasks.forecast",
    "caption": "lstm_train.tasks.caption",
    "text_classify": "lstm_train.tasks.text_classify",
    "tag": "lstm_train.tasks.tag",
    "translate": "lstm_train.tasks.translate",
    "language_model": "lstm_train.tasks.language_model",
}


def get_task(name: str) -> type[Task]:
    module = importlib.import_module(TASKS[name])
    return module.TASK


# task name -> module holding the task's job sections as `Data` and `Model`, importing no
# torch, so that `lstm-train config` validates a job at once; a task without one here is
# asked for its `Data` and `Model` itself.
SECTIONS = {name: f"lstm_train.tasks.sections.{name}"
            for name in ("classify", "forecast", "caption", "text_classify", "tag", "translate", "language_model")}


def get_sections(name: str) -> tuple[type, type]:
    """(Data, Model) of a task's job: the `data:` and `model:` sections' schemas."""
    source = importlib.import_module(SECTIONS[name]) if name in SECTIONS else get_task(name)
    return source.Data, source.Model


__all__ = ["SECTIONS", "TASKS", "get_sections", "get_task"]
