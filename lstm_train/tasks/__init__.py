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


__all__ = ["TASKS", "get_task"]
