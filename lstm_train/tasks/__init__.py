"""Tasks: what is learned (data, model, loss, metrics); the training loop is shared.

A task is a module with one `Task` subclass.  Adding one (say, GRU sentiment)
means a data module, a model, a task module here and a job YAML.
"""

from __future__ import annotations

import importlib

from .base import Splits, Task

# task name -> module holding its Task subclass (imported lazily: forecasting
# pulls in statsmodels, which a classification run should not pay for).
TASKS = {
    "classify": "lstm_train.tasks.classify",
    "forecast": "lstm_train.tasks.forecast",
    "caption": "lstm_train.tasks.caption",
}


def get_task(name: str) -> type[Task]:
    module = importlib.import_module(TASKS[name])
    return module.TASK


__all__ = ["TASKS", "Splits", "Task", "get_task"]
